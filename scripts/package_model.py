"""Package a finished training run as a shipped model: models/<name>/{model.pt, metrics.json, split.json, log.csv}.

    python scripts/package_model.py runs/sen_mp sen_mp --config configs/sen_mp.toml [--reproduce "..."]

metrics.json carries the measured test-split numbers from the run's summary.json (written
by `sen train` after training), the elements and cell sizes seen in training (the app
warns outside them), and the reproduce command. The prose model card (README.md) is
written by hand from these numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Element

from sen.data import load_dataset
from sen.model import TARGET_UNITS
from sen.train import TrainConfig, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path)
    ap.add_argument("name")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--reproduce", help="the training command(s) to record, if more than `sen train --config C`")
    args = ap.parse_args()

    cfg = TrainConfig.from_file(args.config)
    out = Path("models") / args.name
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.run / "best.pt")  # checks the file loads with weights_only=True
    shutil.copy(args.run / "best.pt", out / "model.pt")
    for f in ("split.json", "log.csv"):
        shutil.copy(args.run / f, out / f)

    packed, _ = load_dataset(
        cfg.data, cfg.targets, graph_config=cfg.graph_config, cache_dir=cfg.cache_dir, progress=False
    )
    split = json.loads((args.run / "split.json").read_text())
    train_ids = set(split["train"])
    mask = np.array([cid in train_ids for cid in packed.ids])
    atom_mask = np.repeat(mask, packed.n_atoms)
    elements = sorted({Element.from_Z(int(z)).symbol for z in np.unique(packed.atomic_numbers[atom_mask])},
                      key=lambda s: Element(s).Z)  # fmt: skip

    summary_path = args.run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    targets = {}
    for t in cfg.targets:
        entry = {"unit": TARGET_UNITS.get(t, "")}
        if "test" in summary:
            m = summary["test"][t]
            entry.update(test_mae=m["mae"], test_rmse=m["rmse"], test_r2=m["r2"], test_n=m["n"])
            entry["test_mae_mean_predictor"] = summary["test_mean_predictor"][t]["mae"]
        targets[t] = entry
    card = {
        "name": args.name,
        "arch": cfg.arch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "targets": targets,
        "training_elements": elements,
        "max_atoms_in_training": int(packed.n_atoms[mask].max()),
        "n_train": int(mask.sum()),
        "seed": cfg.seed,
        "best_epoch": summary.get("best_epoch"),
        "epochs_run": summary.get("epochs_run"),
        "train_time_s": summary.get("train_time_s"),
        "hardware": f"{platform.machine()} CPU, {cfg.threads or torch.get_num_threads()} thread(s), torch {torch.__version__}",
        "config": json.loads(json.dumps({k: v for k, v in vars(cfg).items() if k != "extra"}, default=list)),
        "reproduce": args.reproduce or f"sen train --config {args.config}",
        "model_card": f"models/{args.name}/README.md",
        "finished": "test" in summary,
    }
    (out / "metrics.json").write_text(json.dumps(card, indent=1))
    print(json.dumps({k: card[k] for k in ("name", "targets", "best_epoch", "train_time_s", "finished")}, indent=1))


if __name__ == "__main__":
    main()
