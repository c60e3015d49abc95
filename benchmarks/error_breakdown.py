"""Where a trained model errs: test-split MAE by atoms per cell and by metal / non-metal.

Reads the model's ``split.json`` (beside ``model.pt``), predicts its test crystals and prints
a markdown table (the one in the model card); writes ``benchmarks/results/error_breakdown_<name>.json``.

    python benchmarks/error_breakdown.py sen/models/sen_mp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sen.predict import Predictor
from sen.training.data import DEFAULT_DATA, load_dataset
from sen.training.evaluate import split_indices
from sen.training.metrics import predict_packed

BINS = ((1, 4), (5, 10), (11, 20), (21, 40), (41, 80), (81, 10_000))


def breakdown(pred: np.ndarray, true: np.ndarray, n_atoms: np.ndarray, targets: tuple[str, ...]) -> dict:
    """MAE per target overall, per atoms-per-cell bin, for metals (gap 0) and non-metals, and the error's tail."""
    gap = targets.index("band_gap") if "band_gap" in targets else None
    groups: dict[str, np.ndarray] = {"all": np.ones(len(true), bool)}
    for lo, hi in BINS:
        groups[f"{lo}-{hi} atoms" if hi < 10_000 else f"≥{lo} atoms"] = (n_atoms >= lo) & (n_atoms <= hi)
    if gap is not None:
        groups["metals (gap 0)"] = true[:, gap] == 0
        groups["non-metals"] = true[:, gap] > 0
    out: dict = {"groups": {}, "tail": {}}
    for name, mask in groups.items():
        out["groups"][name] = {"n": int(mask.sum())} | {
            t: float(np.abs(pred[mask, j] - true[mask, j]).mean()) if mask.any() else None
            for j, t in enumerate(targets)
        }
    for j, t in enumerate(targets):
        err = np.sort(np.abs(pred[:, j] - true[:, j]))[::-1]
        k = max(1, len(err) // 100)
        out["tail"][t] = {
            "median_abs_error": float(np.median(err)),
            "share_of_total_error_from_worst_1pct": float(err[:k].sum() / err.sum()) if err.sum() > 0 else 0.0,
            "mae_without_worst_1pct": float(err[k:].mean()) if len(err) > k else None,
        }
    return out


def markdown(result: dict, targets: tuple[str, ...]) -> str:
    lines = ["| test crystals | n | " + " | ".join(f"{t} MAE" for t in targets) + " |"]
    lines.append("|---|---:|" + "---:|" * len(targets))
    for name, row in result["groups"].items():
        cells = ("-" if row[t] is None else f"{row[t]:.4f}" for t in targets)
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    for t, tail in result["tail"].items():
        lines.append(
            f"\n- {t}: median absolute error {tail['median_abs_error']:.4f}; the worst 1 % of test crystals "
            f"carry {100 * tail['share_of_total_error_from_worst_1pct']:.0f} % of the total error"
            + (
                f" (MAE without them {tail['mae_without_worst_1pct']:.4f})"
                if tail["mae_without_worst_1pct"] is not None
                else ""
            )
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="folder with model.pt and split.json (e.g. sen/models/sen_mp)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    predictor = Predictor.load(args.model)
    targets = predictor.targets
    packed, _ = load_dataset(args.data, targets, graph_config=predictor.graph_config, progress=False)
    idx = split_indices(predictor, packed, "test")
    with torch.no_grad():
        pred = predict_packed(predictor.model, packed, idx, predictor.device)
    result = breakdown(pred, packed.targets[idx], packed.n_atoms[idx], targets)
    print(markdown(result, targets))
    out = args.out or Path(__file__).parent / "results" / f"error_breakdown_{args.model.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": str(args.model), **result}, indent=1))


if __name__ == "__main__":
    main()
