"""Throughput of ``sen screen`` on this machine: crystals/s, peak memory and CPU use per engine.

    nice -n 10 python benchmarks/bench_screen.py --n 3000      # default 20,000 crystals

Takes the first N crystals of ``../shared/data/mp_crystals`` (gzip JSON Lines) into one input file
and runs, each as its own process tree, timed from start to exit:

* ``predict``: the ``sen predict`` path in one process: ``read_structure`` + ``Predictor.predict``
  (batches of 64), one torch thread;
* ``local-1``, ``local-2``: ``sen screen --workers 1`` / ``--workers 2`` (the process pool);
* ``ray``: ``sen screen --engine ray`` (a local Ray of all cores), when Ray is installed.

For each: wall time of the whole command, the rate ``sen screen`` reports for its own loop (from the
first record read to the last row committed, worker start-up included), peak resident memory of the
process tree (sampled every 0.2 s, summed over the tree), and CPU utilisation (CPU seconds of the
tree / wall seconds: 2.0 = both cores busy). Every output is compared with the ``predict`` numbers.
Writes ``benchmarks/results/screen.json``. The machine may be shared: the load average before and
after each run is recorded with it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "mp_crystals"

PREDICT_SCRIPT = r"""
import json, sys, time, gzip
import torch
torch.set_num_threads(1)
from sen.io import read_structure
from sen.errors import StructureError
from sen.predict import Predictor
t0 = time.perf_counter()
p = Predictor.load(device="cpu")
ids, structures, out = [], [], {}
with gzip.open(sys.argv[1], "rt") as fh:
    for line in fh:
        r = json.loads(line)
        try:
            structures.append(read_structure(r["cif"].encode(), fmt="cif"))
            ids.append(r["material_id"])
        except StructureError:
            pass
for i, row in zip(ids, p.predict(structures)):
    out[i] = [row["band_gap"], row["formation_energy_per_atom"]]
json.dump({"seconds": time.perf_counter() - t0, "rows": out}, open(sys.argv[2], "w"))
"""


def make_input(n: int, path: Path, only: set[str] | None = None) -> int:
    """The first ``n`` records of the MP data (files in name order; with ``only``, those ids) as one gzip JSON Lines file."""
    written = 0
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for f in sorted(DATA.glob("part-*.jsonl.gz")):
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                for line in fh:
                    if written >= n:
                        return written
                    if line.strip() and (only is None or json.loads(line)["material_id"] in only):
                        out.write(line)
                        written += 1
    return written


def measure(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; wall time, peak RSS of its process tree (MB) and CPU seconds of the tree."""
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    peak = 0
    while proc.poll() is None:
        rss = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system  # the last value seen of every process, exited ones included
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, rss)
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    cpu_s = sum(cpu.values())
    return {"command": " ".join(cmd), "exit_status": proc.returncode, "wall_s": round(wall, 2),
            "peak_rss_mb": round(peak / 2**20, 1), "cpu_s": round(cpu_s, 1),
            "cpu_utilisation_cores": round(cpu_s / wall, 2), "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2), "stderr_tail": err.strip().splitlines()[-6:]}  # fmt: skip


def max_diff(out: Path, expected: dict) -> tuple[float, int]:
    """Largest |difference| from the predict numbers over band gap and formation energy; rows compared."""
    import pyarrow.parquet as pq

    worst, n = 0.0, 0
    for r in pq.read_table(out).to_pylist():
        if r["id"] in expected and r["error"] is None:
            bg, fe = expected[r["id"]]
            worst = max(worst, abs(r["band_gap_eV"] - bg), abs(r["formation_energy_eV_per_atom"] - fe))
            n += 1
    return worst, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="crystals (default 20,000)")
    ap.add_argument("--configs", default="predict,local-1,local-2,ray")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "screen.json"))
    ap.add_argument("--split", choices=("train", "val", "test"), help="only crystals of this split of sen_mp")
    args = ap.parse_args()
    only = None
    if args.split:
        only = set(json.loads((ROOT / "sen" / "models" / "sen_mp" / "split.json").read_text())[args.split])
    env = {**os.environ, "SEN_THREADS": "1", "PYTHONPATH": str(ROOT)}
    py = sys.executable
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu_cores": psutil.cpu_count(), "n_requested": args.n,
              "command": "nice -n 10 " + " ".join([Path(py).name, *sys.argv]), "runs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "crystals.jsonl.gz"
        result["n"] = make_input(args.n, data, only)
        result["split"] = args.split or "all"
        expected = None
        for name in args.configs.split(","):
            if name == "predict":
                cmd = [py, "-c", PREDICT_SCRIPT, str(data), str(tmp / "predict.json")]
            else:
                cmd = [py, "-m", "sen", "screen", str(data), "--out", str(tmp / f"{name}.parquet"), "--no-progress"]
                cmd += ["--engine", "ray"] if name == "ray" else ["--engine", "local", "--workers", name.split("-")[1]]
                if name == "ray":
                    try:
                        import ray  # noqa: F401
                    except ImportError:
                        result["runs"][name] = {"skipped": "ray is not installed"}
                        continue
            print(f"{name}: {' '.join(cmd[:3])} ...", file=sys.stderr, flush=True)
            run = measure(cmd, env)
            if name == "predict":
                run["command"] = f"{Path(py).name} -c PREDICT_SCRIPT {data.name} predict.json  (read_structure + Predictor.predict)"
            if name == "predict" and run["exit_status"] == 0:
                got = json.loads((tmp / "predict.json").read_text())
                expected = got["rows"]
                run["loop_s"] = round(got["seconds"], 2)
                run["crystals_per_s"] = round(len(expected) / got["seconds"], 2)
            elif run["exit_status"] in (0, 1) and (tmp / f"{name}.parquet").exists():
                tail = "\n".join(run["stderr_tail"])
                m = re.search(r"in ([\d.]+) s \(([\d.]+) crystals/s", tail)
                if m:
                    run["loop_s"], run["crystals_per_s"] = float(m.group(1)), float(m.group(2))
                m = re.search(r"([\d.]+) crystals/s after a start-up of ([\d.]+) s", tail)
                if m:
                    run["steady_crystals_per_s"], run["startup_s"] = float(m.group(1)), float(m.group(2))
                if expected is not None:
                    run["max_abs_diff_vs_predict"], run["rows_compared"] = max_diff(tmp / f"{name}.parquet", expected)
            run["crystals_per_s_wall"] = round(result["n"] / run["wall_s"], 2)
            result["runs"][name] = run
            print(json.dumps({name: {k: v for k, v in run.items() if k != "stderr_tail"}}), file=sys.stderr, flush=True)
    runs = result["runs"]
    for key in ("crystals_per_s", "steady_crystals_per_s"):
        if key in runs.get("local-1", {}) and key in runs.get("local-2", {}):
            result[f"speedup_2_workers_{key}"] = round(runs["local-2"][key] / runs["local-1"][key], 2)
    result["speedup_2_workers_target"] = 1.8
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
