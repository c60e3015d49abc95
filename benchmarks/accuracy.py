"""Accuracy of SEN against the baselines on the same test split (the table in benchmarks/README.md).

Reads the ``summary.json`` that ``sen train`` writes at the end of each run (test-split
metrics of the best checkpoint and of the mean predictor) and prints a markdown table;
writes ``benchmarks/results/accuracy.json``.

    # both runs side by side, 1 thread each on the 2 cores: 100 minutes, then a warm restart to 225
    sen train --config configs/sen_mp.toml & sen train --config configs/cgcnn_mp.toml; wait
    STAGE2="--resume --time-limit-min 225 --patience 200"
    sen train --config configs/sen_mp.toml $STAGE2 & sen train --config configs/cgcnn_mp.toml $STAGE2; wait
    python benchmarks/accuracy.py runs/sen_mp runs/cgcnn_mp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sen.model import TARGET_UNITS

TARGETS_MAE = {"formation_energy_per_atom": 0.040, "band_gap": 0.26}  # issue 3's targets


def load_run(run: Path) -> dict:
    if not (run / "summary.json").is_file():
        raise SystemExit(f"error: {run}/summary.json not found: is the run finished (sen train writes it at the end)?")
    summary = json.loads((run / "summary.json").read_text())
    cfg = json.loads((run / "data_report.json").read_text()) if (run / "data_report.json").is_file() else {}
    return {"run": str(run), "summary": summary, "data_report": cfg}


def table(runs: list[dict]) -> tuple[str, dict]:
    first = runs[0]["summary"]
    targets = list(first["test"])
    rows = []
    result: dict = {"targets": {}, "runs": []}
    for t in targets:
        mp = first["test_mean_predictor"][t]
        rows.append((t, "mean of training targets", "-", "-", "-", mp["mae"], mp["rmse"], mp["r2"], mp["n"]))
        result["targets"][t] = {"mean_predictor": mp, "goal_mae": TARGETS_MAE.get(t)}
        for r in runs:
            s = r["summary"]
            m = s["test"][t]
            name = Path(r["run"]).name
            rows.append(
                (t, name, f"{s['parameters']:,}", s["epochs_run"], f"{s['train_time_s'] / 60:.0f}",
                 m["mae"], m["rmse"], m["r2"], m["n"])
            )  # fmt: skip
            result["targets"][t][name] = m
    for r in runs:
        s = r["summary"]
        result["runs"].append(
            {"run": r["run"], "parameters": s["parameters"], "epochs_run": s["epochs_run"],
             "best_epoch": s["best_epoch"], "train_time_s": s["train_time_s"]}
        )  # fmt: skip
    lines = [
        "| target | model | parameters | epochs | train min | test MAE | test RMSE | test R² | n |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, name, p, ep, mins, mae, rmse, r2, n in rows:
        u = TARGET_UNITS.get(t, "")
        lines.append(f"| {t} ({u}) | {name} | {p} | {ep} | {mins} | {mae:.4f} | {rmse:.4f} | {r2:.3f} | {n} |")
    if len(runs) >= 2:
        lines.append("")
        base = Path(runs[1]["run"]).name
        for t in targets:
            ratio = runs[1]["summary"]["test"][t]["mae"] / runs[0]["summary"]["test"][t]["mae"]
            result["targets"][t]["mae_ratio_baseline_over_first"] = ratio
            goal = TARGETS_MAE.get(t)
            got = runs[0]["summary"]["test"][t]["mae"]
            verdict = (
                "" if goal is None else (f"; goal ≤ {goal} {'met' if got <= goal else f'missed by {got - goal:.3f}'}")
            )
            lines.append(f"- {t}: {base} MAE / {Path(runs[0]['run']).name} MAE = {ratio:.2f}{verdict}")
    return "\n".join(lines), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders; the first is the model, the others baselines")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "accuracy.json")
    args = ap.parse_args()
    runs = [load_run(r) for r in args.runs]
    text, result = table(runs)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
