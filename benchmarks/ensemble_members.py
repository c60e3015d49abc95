"""Which trained networks to put in the shipped ensemble, chosen on the validation split only.

Predicts the validation crystals of ``sen/models/sen_mp/split.json`` once per candidate network,
then scores every subset of candidates per target (combined exactly as ``sen.model.Ensemble``
does: the mean of the subset's predictions, the band gap gated on their mean metal probability).
An ensemble may take each target from its own networks (``--target-runs`` of
scripts/package_model.py); the choice is the pair of subsets, one per target, with the lowest
score (the mean standardised validation MAE that ``sen train`` selects checkpoints by) among
those that share a network (the first network, whose routing the app shows, serves every
target) and use at most ``--max-networks`` networks in all (each one costs prediction time:
see bench_pipeline.py). Also prints how correlated the networks' validation errors are
(averaging helps least where they are most alike) and the mean validation MAE of every k of the
chosen networks, k = 1 .. all (how much each added network still buys). Prints the tables in benchmarks/README.md; writes
``benchmarks/results/ensemble_members.json``. The test split is not looked at.

    python benchmarks/ensemble_members.py runs/sen_mp/best.pt runs/sen_mp_control/best.pt \\
        runs/sen_mp_dropout/best.pt runs/sen_mp_fe1/best.pt runs/sen_mp_fe2/best.pt --max-networks 3
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from sen.checkpoint import load_model
from sen.model import Ensemble
from sen.training.data import DEFAULT_DATA, load_dataset
from sen.training.metrics import predict_outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+", type=Path, help="best.pt / model.pt files")
    ap.add_argument("--max-networks", type=int, default=3, help="at most this many networks in the ensemble")
    ap.add_argument("--split", type=Path, default=Path("sen/models/sen_mp/split.json"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ensemble_members.json")
    args = ap.parse_args()

    torch.set_num_threads(1)
    nets = [load_model(p) for p in args.candidates]
    names = [str(p) for p in args.candidates]
    targets = nets[0].config.targets
    packed, _ = load_dataset(DEFAULT_DATA, targets, graph_config=nets[0].graph_config, progress=False)
    wanted = set(json.loads(args.split.read_text())["val"])
    idx = np.array([i for i, cid in enumerate(packed.ids) if cid in wanted])
    true = torch.from_numpy(packed.targets[idx])
    scale = {t: nets[0].config.target_stats[t][1] for t in targets}
    outputs = [predict_outputs(net, packed, idx) for net in nets]  # each network predicts once

    # validation MAE of every target for every subset of networks
    subsets = [s for k in range(1, len(nets) + 1) for s in itertools.combinations(range(len(nets)), k)]
    mae: dict[tuple[int, ...], dict[str, float]] = {}
    for subset in subsets:
        combined = Ensemble([nets[i] for i in subset]).combine([outputs[i] for i in subset])
        mae[subset] = {t: float((combined[t] - true[:, j]).abs().mean()) for j, t in enumerate(targets)}

    choices = []
    for pick in itertools.product(subsets, repeat=len(targets)):
        union = sorted(set().union(*pick))
        if len(union) > args.max_networks or not set.intersection(*map(set, pick)):
            continue
        val = {t: mae[s][t] for t, s in zip(targets, pick, strict=True)}
        score = float(np.mean([val[t] / scale[t] for t in targets]))
        choices.append({"networks": len(union), "score": score, "val_mae": val,
                        "target_members": {t: [names[i] for i in s] for t, s in zip(targets, pick, strict=True)},
                        "same_for_all_targets": len(set(pick)) == 1})  # fmt: skip
    choices.sort(key=lambda c: (c["score"], c["networks"]))
    uniform = [c for c in choices if c["same_for_all_targets"]]

    def label(paths: list[str]) -> str:
        return " + ".join(Path(p).parent.name for p in paths)

    header = " | ".join(f"{t} from" for t in targets) + " | " + " | ".join(f"val {t} MAE" for t in targets)
    print(f"| {header} | score |\n|" + "---|" * len(targets) + "---:|" * (len(targets) + 1))
    for c in choices[:10] + [c for c in uniform[:3] if c not in choices[:10]]:
        cells = " | ".join(label(c["target_members"][t]) for t in targets)
        print(f"| {cells} | " + " | ".join(f"{c['val_mae'][t]:.4f}" for t in targets) + f" | {c['score']:.5f} |")
    # how alike the networks' mistakes are: averaging helps least where errors are most correlated
    errors = {t: np.stack([(o[t] - true[:, j]).numpy() for o in outputs]) for j, t in enumerate(targets)}
    correlation = {t: np.atleast_2d(np.corrcoef(e)).round(3).tolist() for t, e in errors.items()}
    for t in targets:
        print(f"\nvalidation error correlation, {t}:\n| | " + " | ".join(label([n]) for n in names)
              + " |\n|---|" + "---:|" * len(names))  # fmt: skip
        for name, row in zip(names, correlation[t], strict=True):
            print(f"| {label([name])} | " + " | ".join(f"{c:.2f}" for c in row) + " |")
    best = choices[0]
    # how the error falls with the number of networks: the mean over all k-subsets of the chosen ones
    chosen = sorted(names.index(n) for n in set().union(*best["target_members"].values()))
    by_count = {k: {t: float(np.mean([mae[s][t] for s in itertools.combinations(chosen, k)])) for t in targets}
                for k in range(1, len(chosen) + 1)}  # fmt: skip
    print("\nmean validation MAE over every k of the chosen networks:\n| k | "
          + " | ".join(targets) + " |\n|---:|" + "---:|" * len(targets))  # fmt: skip
    for k, row in by_count.items():
        print(f"| {k} | " + " | ".join(f"{row[t]:.4f}" for t in targets) + " |")
    print(f"\nchosen ({best['networks']} networks): "
          + "; ".join(f"{t} from {label(m)}" for t, m in best["target_members"].items()))  # fmt: skip
    result = {"split": "val", "candidates": names, "max_networks": args.max_networks, "chosen": best,
              "best_same_for_all_targets": uniform[0] if uniform else None, "top": choices[:50],
              "single_networks": {names[i]: mae[(i,)] for i in range(len(nets))},
              "error_correlation": correlation, "mean_val_mae_by_number_of_chosen_networks": by_count}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
