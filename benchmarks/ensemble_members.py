"""Which trained networks to put in the shipped ensemble, chosen on the validation split only.

Predicts the validation crystals of ``models/sen_mp/split.json`` once per candidate network,
then scores every subset that contains the first candidate (combined exactly as
``sen.model.Ensemble`` does) by the mean standardised validation MAE, the score ``sen train``
selects checkpoints by, and, per target, picks the subset with the lowest validation MAE of that
target (an ensemble may take each target from its own networks: ``--target-runs`` of
scripts/package_model.py). Prints the tables in benchmarks/README.md; writes
``benchmarks/results/ensemble_members.json``. The test split is not looked at.

    python benchmarks/ensemble_members.py runs/sen_mp/best.pt runs/sen_mp_control/best.pt \\
        runs/sen_mp_dropout/best.pt runs/sen_mp_control_100min/best.pt
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from sen.data import DEFAULT_DATA, load_dataset
from sen.graph import collate
from sen.model import Ensemble
from sen.train import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+", type=Path, help="best.pt / model.pt files; the first is always in")
    ap.add_argument("--split", type=Path, default=Path("models/sen_mp/split.json"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ensemble_members.json")
    args = ap.parse_args()

    nets = [load_model(p) for p in args.candidates]
    targets = nets[0].config.targets
    packed, _ = load_dataset(DEFAULT_DATA, targets, graph_config=nets[0].graph_config, progress=False)
    wanted = set(json.loads(args.split.read_text())["val"])
    idx = np.array([i for i, cid in enumerate(packed.ids) if cid in wanted])
    true = torch.from_numpy(packed.targets[idx])
    scale = torch.tensor([nets[0].config.target_stats[t][1] for t in targets])
    with torch.no_grad():
        batches = [collate([packed.graph(i) for i in idx[s : s + 256]]) for s in range(0, len(idx), 256)]
        outputs = [[net(b) for b in batches] for net in nets]  # per network, per batch

    rows = []
    for size in range(1, len(nets) + 1):
        for subset in itertools.combinations(range(len(nets)), size):
            if 0 not in subset:
                continue
            ensemble = Ensemble([nets[i] for i in subset])
            combined = [ensemble.combine([outputs[i][b] for i in subset]) for b in range(len(batches))]
            pred = torch.stack([torch.cat([c[t] for c in combined]) for t in targets], dim=-1)
            mae = (pred - true).abs().mean(0)
            rows.append({"members": [str(args.candidates[i]) for i in subset], "score": float((mae / scale).mean()),
                         "val_mae": dict(zip(targets, map(float, mae), strict=True))})  # fmt: skip
    rows.sort(key=lambda r: r["score"])
    print("| networks | " + " | ".join(f"val {t} MAE" for t in targets) + " | score |")
    print("|---|" + "---:|" * (len(targets) + 1))
    for r in rows:
        cells = " | ".join(f"{r['val_mae'][t]:.4f}" for t in targets)
        print(f"| {' + '.join(Path(m).parent.name for m in r['members'])} | {cells} | {r['score']:.5f} |")
    per_target = {}
    for t in targets:
        best = min(rows, key=lambda r: (r["val_mae"][t], len(r["members"])))  # ties: fewer networks
        per_target[t] = {"members": best["members"], "val_mae": best["val_mae"][t]}
    print("\n| target | networks chosen for it | val MAE |\n|---|---|---:|")
    for t, choice in per_target.items():
        print(f"| {t} | {' + '.join(Path(m).parent.name for m in choice['members'])} | {choice['val_mae']:.4f} |")
    chosen = sorted({m for c in per_target.values() for m in c["members"]}, key=[str(c) for c in args.candidates].index)
    score = float(np.mean([per_target[t]["val_mae"] / float(scale[j]) for j, t in enumerate(targets)]))
    print(f"\nper-target choice: {len(chosen)} networks, score {score:.5f} (best single subset {rows[0]['score']:.5f})")
    result = {"split": "val", "candidates": [str(c) for c in args.candidates], "subsets": rows,
              "per_target": per_target, "per_target_networks": chosen, "per_target_score": score}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
