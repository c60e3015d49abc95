"""Package finished training runs as a shipped model: sen/models/<name>/{model.pt, metrics.json, split.json, logs}.

    python scripts/package_model.py sen_mp runs/sen_mp --config configs/sen_mp.toml [--reproduce "..."]
    python scripts/package_model.py sen_mp runs/a runs/b runs/c --config configs/sen_mp.toml   # an ensemble
    python scripts/package_model.py sen_mp runs/a runs/b runs/c --config configs/sen_mp.toml \
        --target-runs formation_energy_per_atom=runs/a,runs/c   # formation energy from two of the three

One run ships its ``best.pt`` as ``model.pt``; several runs (trained on the same split) ship as
one :class:`sen.model.Ensemble` file whose predictions are the mean of the runs' networks, with
their spread. ``metrics.json`` carries the val/test-split numbers measured here on the packaged
weights (and on each member), how the ensemble's spread relates to its error on the test split,
the elements and cell sizes seen in training (the app warns outside them), the training time
from each run's ``summary.json`` and the reproduce command. Runs refit on train + validation
(``sen train --train-on-val``) have seen the validation crystals: no validation number is
reported for them (nor for an ensemble holding one), and their training crystals include those.
The prose model card (README.md) is written by hand from these numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Element
from scipy.stats import spearmanr

from sen.checkpoint import MODELS_DIR, load_model, save_ensemble
from sen.model import TARGET_UNITS, Ensemble
from sen.training.config import TrainConfig
from sen.training.data import load_dataset
from sen.training.metrics import predict_outputs, regression_metrics

SPREAD_QUANTILE = 0.9  # the app flags crystals whose ensemble spread is above this quantile of the test split's


def _arguments(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("runs", type=Path, nargs="+", help="training output folders (each with best.pt and split.json)")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--reproduce", help="the training command(s) to record, if more than `sen train --config C`")
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                    help=f"where the model folder is written (default: the package's {MODELS_DIR})")  # fmt: skip
    ap.add_argument("--hardware", help="where the networks were trained, if not (only) on this machine's CPU")
    ap.add_argument("--target-runs", action="append", default=[], metavar="TARGET=RUN,RUN",
                    help="an ensemble's networks for one target (default: all the runs); repeat per target")  # fmt: skip
    return ap.parse_args(argv)


def _target_members(args: argparse.Namespace) -> dict[str, list[int]]:
    """``--target-runs`` as {target: [indices of the runs]}."""
    target_members = {}
    for spec in args.target_runs:
        target, _, names = spec.partition("=")
        chosen = [Path(n) for n in names.split(",") if n]
        if any(run not in args.runs for run in chosen):
            raise SystemExit(f"error: --target-runs {spec}: every run must be one of the runs being packaged")
        target_members[target] = [args.runs.index(run) for run in chosen]
    return target_members


def write_model_folder(args, members: list, split: dict, target_members: dict) -> Path:
    """Weights (one run's ``best.pt`` or one ensemble file), the training logs and the split."""
    out = args.models_dir / args.name
    out.mkdir(parents=True, exist_ok=True)
    if len(members) == 1:
        shutil.copy(args.runs[0] / "best.pt", out / "model.pt")
        shutil.copy(args.runs[0] / "log.csv", out / "log.csv")
    else:
        save_ensemble(out / "model.pt", members, {"members": [str(r) for r in args.runs]}, target_members)
        (out / "log.csv").unlink(missing_ok=True)
        for i, run in enumerate(args.runs, 1):
            shutil.copy(run / "log.csv", out / f"log_member{i}.csv")
    (out / "split.json").write_text(json.dumps(split))
    return out


def _split_indices(packed, split: dict) -> dict[str, np.ndarray]:
    index_of = {cid: i for i, cid in enumerate(packed.ids)}
    return {k: np.array([index_of[c] for c in v if c in index_of], dtype=np.int64) for k, v in split.items() if k != "seed"}


def measure(model, packed, idx: dict, refit: list[bool], targets: tuple[str, ...], mean_pred: np.ndarray):
    """Test (and, for networks that have not trained on it, validation) numbers of the packaged model and
    of each network. Each network predicts each split once; the ensemble combines those outputs as its
    forward does. Returns (per-target card entries, per-network test / val metrics)."""
    nets = list(model.members) if isinstance(model, Ensemble) else [model]
    outs = {"test": [predict_outputs(net, packed, idx["test"]) for net in nets],
            "val": [None if r else predict_outputs(net, packed, idx["val"]) for net, r in zip(nets, refit, strict=True)]}  # fmt: skip
    whole = {part: model.combine(o) if len(nets) > 1 else o[0] for part, o in outs.items() if None not in o}

    def scores(out: dict[str, torch.Tensor], part: str) -> dict:
        true = packed.targets[idx[part]]
        return {t: regression_metrics(out[t].numpy(), true[:, j]) for j, t in enumerate(targets)}

    test = scores(whole["test"], "test")
    val = scores(whole["val"], "val") if "val" in whole else None
    entries = {}
    for j, t in enumerate(targets):
        m, true = test[t], packed.targets[idx["test"], j]
        entries[t] = {
            "unit": TARGET_UNITS.get(t, ""), "test_mae": m["mae"], "test_rmse": m["rmse"], "test_r2": m["r2"],
            "test_n": m["n"], "val_mae": val[t]["mae"] if val else None,
            "test_mae_mean_predictor": regression_metrics(np.full(len(true), mean_pred[j]), true)["mae"],
        }  # fmt: skip
        if len(nets) > 1 and len(model.target_members[t]) > 1:  # one network for a target: no spread
            entries[t]["spread"] = spread_vs_error(
                whole["test"][f"{t}_std"].numpy(), np.abs(whole["test"][t].numpy() - true)
            )
    per_network = [(scores(outs["test"][k], "test"), None if refit[k] else scores(outs["val"][k], "val"))
                   for k in range(len(nets))]  # fmt: skip
    return entries, per_network


def _member_cards(args, model, summaries, refit, per_network, targets) -> list[dict]:
    nets = list(model.members) if isinstance(model, Ensemble) else [model]
    cards = []
    for k, (run, net, summary) in enumerate(zip(args.runs, nets, summaries, strict=True)):
        m_test, m_val = per_network[k]
        cards.append({
            "run": str(run), "best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run"),
            "train_time_s": summary.get("train_time_s"), "dropout": net.config.dropout,
            "trained_on": "train+val" if refit[k] else "train",
            "val_mae": {t: m_val[t]["mae"] for t in targets} if m_val else None,
            "test_mae": {t: m_test[t]["mae"] for t in targets},
        })  # fmt: skip
    return cards


def main(argv: list[str] | None = None) -> None:
    """Package the runs named on the command line (see the module's docstring)."""
    args = _arguments(argv)
    target_members = _target_members(args)
    cfg = TrainConfig.from_file(args.config)
    members = [load_model(run / "best.pt") for run in args.runs]  # each loads with weights_only=True
    splits = [json.loads((run / "split.json").read_text()) for run in args.runs]
    if any(s != splits[0] for s in splits[1:]):
        raise SystemExit("error: the runs were trained on different splits; an ensemble needs one split")
    if target_members:
        try:
            Ensemble(members, target_members)  # checks the choice before anything is written
        except ValueError as exc:
            raise SystemExit(f"error: --target-runs: {exc}") from None
    summaries = [json.loads(p.read_text()) if (p := run / "summary.json").is_file() else {} for run in args.runs]
    refit = [m.extra.get("trained_on") == "train+val" for m in members]  # these networks have seen validation
    out = write_model_folder(args, members, splits[0], target_members)
    model = load_model(out / "model.pt")

    packed, _ = load_dataset(cfg.data, cfg.targets, graph_config=cfg.graph, cache_dir=cfg.cache_dir, progress=False)
    idx = _split_indices(packed, splits[0])
    train_mask = np.zeros(len(packed), bool)
    train_mask[idx["train"]] = True
    if any(refit):
        train_mask[idx["val"]] = True
    atom_mask = np.repeat(train_mask, packed.n_atoms)
    elements = sorted({Element.from_Z(int(z)).symbol for z in np.unique(packed.atomic_numbers[atom_mask])},
                      key=lambda s: Element(s).Z)  # fmt: skip
    entries, per_network = measure(model, packed, idx, refit, cfg.targets, packed.targets[train_mask].mean(0))
    member_cards = _member_cards(args, model, summaries, refit, per_network, cfg.targets)
    card = {
        "name": args.name, "arch": "ensemble" if len(members) > 1 else cfg.arch, "n_members": len(members),
        "parameters": sum(p.numel() for p in model.parameters()), "targets": entries,
        "training_elements": elements, "max_atoms_in_training": int(packed.n_atoms[train_mask].max()),
        "n_train": int(train_mask.sum()),
        "trained_on": "train+val" if all(refit) else "train" if not any(refit) else "mixed",
        "seed": splits[0].get("seed", cfg.seed), "members": member_cards,
        "target_members": {t: [str(args.runs[i]) for i in m] for t, m in getattr(model, "target_members", {}).items()},
        "train_time_s": sum(m["train_time_s"] or 0.0 for m in member_cards),
        "hardware": args.hardware
        or f"{platform.machine()} CPU, {cfg.threads or torch.get_num_threads()} thread(s) per run, torch {torch.__version__}",
        "config": json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k != "extra"}, default=list)),
        "reproduce": args.reproduce or f"sen train --config {args.config}",
        "model_card": f"sen/models/{args.name}/README.md", "finished": all("test" in s for s in summaries),
    }  # fmt: skip
    if len(members) == 1:
        card.update({k: summaries[0].get(k) for k in ("best_epoch", "epochs_run")})
    (out / "metrics.json").write_text(json.dumps(card, indent=1))
    print(json.dumps({k: card[k] for k in ("name", "n_members", "targets", "train_time_s", "finished")}, indent=1))


def spread_vs_error(s: np.ndarray, e: np.ndarray) -> dict:
    """How the members' spread ``s`` tracks the ensemble's absolute error ``e``: MAE by spread quartile,
    and the MAE above the ``SPREAD_QUANTILE`` spread (the app's "the networks disagree" threshold)."""
    quarters = np.array_split(np.argsort(s, kind="stable"), 4)  # by rank: ties (many zero spreads) split evenly
    threshold = float(np.quantile(s, SPREAD_QUANTILE))
    return {
        "mae_by_spread_quartile": [float(e[q].mean()) for q in quarters],
        "spread_quartile_ranges": [[float(s[q].min()), float(s[q].max())] for q in quarters],
        "high_spread_threshold": threshold,
        "high_spread_quantile": SPREAD_QUANTILE,
        "mae_above_threshold": float(e[s > threshold].mean()),
        "mae_below_threshold": float(e[s <= threshold].mean()),
        "spearman_spread_error": float(spearmanr(s, e).statistic),
    }


if __name__ == "__main__":
    main()
