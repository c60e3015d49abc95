"""Speed of the prediction pipeline on one CPU core: parse, symmetry, graph, forward, end to end, batch.

For a 2-atom (Si, primitive), 5-atom (SrTiO3), 28-atom (LiFePO4, Pnma) and 224-atom
(LiFePO4 2x2x2 supercell) crystal, times each stage from CIF text to prediction and reports
the median over repeated runs; then the throughput of ``Predictor.predict`` on a batch of 64
mixed crystals (the gallery in ``assets/examples``), and where the time of batches goes stage by
stage over test-split crystals of ``../shared/data`` (when present). The forward pass is timed as
``predict`` runs it (six networks stacked, on one row per Wyckoff orbit where that is exact) and on every
atom, beside one network alone. Target: under 10 ms end to end for the 28-atom crystal on one CPU core.
Prints a markdown table and writes ``benchmarks/results/pipeline.json``.

    python benchmarks/bench_pipeline.py            # shipped sen_mp weights (untrained if absent)
    python benchmarks/bench_pipeline.py --repeats 50 --model sen/models/sen_mp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one core, as the target says

import torch  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402
from pymatgen.io.cif import CifWriter  # noqa: E402

from sen.graph import build_graph, collate  # noqa: E402
from sen.io import read_structure  # noqa: E402
from sen.predict import Predictor  # noqa: E402
from sen.symmetry import analyze_symmetry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"
TARGET_MS = 10.0  # end to end, 28-atom crystal, one CPU core
TARGET_CRYSTAL = "LiFePO4 (28 atoms)"


def benchmark_crystals() -> dict[str, str]:
    """Name -> CIF text of the four benchmark crystals."""
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]).get_primitive_structure()
    olivine = read_structure(EXAMPLES / "lifepo4_olivine.cif")
    return {
        "Si (2 atoms)": str(CifWriter(si)),
        "SrTiO3 (5 atoms)": (EXAMPLES / "srtio3_perovskite.cif").read_text(),
        TARGET_CRYSTAL: (EXAMPLES / "lifepo4_olivine.cif").read_text(),
        "LiFePO4 2x2x2 (224 atoms)": str(CifWriter(olivine * (2, 2, 2))),
    }


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def stage_times(predictor: Predictor, cif: str, repeats: int) -> dict[str, float]:
    """Median milliseconds of each pipeline stage for one crystal."""
    cfg = predictor.graph_config
    structure = read_structure(cif, filename="x.cif")
    report = analyze_symmetry(structure, cfg.symprec, cfg.angle_tolerance)
    graph = build_graph(structure, cfg, report)
    full = collate([graph]).to(predictor.device)  # a row per atom
    batch = predictor._batch([graph])  # what predict() runs: a row per Wyckoff orbit where that is exact
    members = getattr(predictor.model, "members", [predictor.model])

    def timed(fn, b):
        @torch.inference_mode()
        def run():
            return fn(b)

        return median_ms(run, repeats)

    return {
        "n_atoms": len(structure),
        "rows": int(batch.atomic_numbers.numel()),
        "edges": int(full.edge_src.numel()),
        "edges_of_rows": int(batch.edge_src.numel()),
        "parse_ms": median_ms(lambda: read_structure(cif, filename="x.cif"), repeats),
        "symmetry_ms": median_ms(lambda: analyze_symmetry(structure, cfg.symprec, cfg.angle_tolerance), repeats),
        "graph_ms": median_ms(lambda: predictor._batch([build_graph(structure, cfg, report)]), repeats),
        # the path predict() takes: the networks stacked, on the orbit rows
        "forward_ms": timed(predictor._forward, batch),
        "forward_one_network_ms": timed(members[0], batch),
        "forward_every_atom_ms": timed(predictor._forward, full),
        "forward_one_network_every_atom_ms": timed(members[0], full),
        "forward_networks_in_turn_every_atom_ms": timed(predictor.model, full),
        "end_to_end_ms": median_ms(lambda: predictor.predict(read_structure(cif, filename="x.cif")), repeats),
    }


def batch_throughput(predictor: Predictor, n: int = 64, repeats: int = 3) -> dict[str, float]:
    """Crystals per second for ``predictor.predict`` on ``n`` mixed gallery crystals (one batch)."""
    cifs = [p.read_text() for p in sorted(EXAMPLES.glob("*.cif"))]
    texts = [cifs[i % len(cifs)] for i in range(n)]
    structures = [read_structure(t, filename="x.cif") for t in texts]
    from_structures = median_ms(lambda: predictor.predict(structures, batch_size=n), repeats, warmup=1)
    from_text = median_ms(
        lambda: predictor.predict([read_structure(t, filename="x.cif") for t in texts], batch_size=n), repeats, 1
    )
    return {
        "n_crystals": n,
        "n_atoms_total": sum(len(s) for s in structures),
        "batch_ms": from_structures,
        "crystals_per_s": 1e3 * n / from_structures,
        "crystals_per_s_from_cif_text": 1e3 * n / from_text,
    }


def split_stages(predictor: Predictor, n: int, batch: int = 64) -> dict | None:
    """Where the time of a batch goes: milliseconds per crystal in each stage over ``n`` test-split crystals of
    ``../shared/data/mp_crystals`` (as CIF text), one core; None without the data."""
    from sen.training.data import iter_raw_records

    data = ROOT.parent / "shared" / "data" / "mp_crystals"
    split = ROOT / "sen" / "models" / "sen_mp" / "split.json"
    if not data.is_dir() or not split.is_file():
        return None
    test = set(json.loads(split.read_text())["test"])
    cifs = []
    for record in iter_raw_records(data, ()):
        if record.id in test:
            cifs.append(record.structure)
            if len(cifs) >= n:
                break
    cfg = predictor.graph_config
    seconds = dict.fromkeys(("parse", "symmetry", "graph", "orbit_rows_and_collate", "forward", "rows"), 0.0)
    one_network = 0.0  # the first network alone on the same batches (not part of the pipeline's time)
    first = getattr(predictor.model, "members", [predictor.model])[0]
    atoms = rows = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(cifs), batch):
            graphs = []
            for cif in cifs[i : i + batch]:
                t0 = time.perf_counter()
                s = read_structure(cif, filename="x.cif")
                t1 = time.perf_counter()
                report = analyze_symmetry(s, cfg.symprec, cfg.angle_tolerance)
                t2 = time.perf_counter()
                graphs.append(build_graph(s, cfg, report))
                t3 = time.perf_counter()
                seconds["parse"] += t1 - t0
                seconds["symmetry"] += t2 - t1
                seconds["graph"] += t3 - t2
                atoms += len(s)
            t0 = time.perf_counter()
            b = predictor._batch(graphs)
            t1 = time.perf_counter()
            out = predictor._forward(b)
            t2 = time.perf_counter()
            predictor._rows(out, len(graphs))
            t3 = time.perf_counter()
            first(b)
            one_network += time.perf_counter() - t3
            seconds["orbit_rows_and_collate"] += t1 - t0
            seconds["forward"] += t2 - t1
            seconds["rows"] += t3 - t2
            rows += int(b.atomic_numbers.numel())
    total = time.perf_counter() - start - one_network  # the pipeline's time, without the comparison
    return {
        "n_crystals": len(cifs),
        "atoms": atoms,
        "orbit_rows": rows,
        "ms_per_crystal": {k: round(1e3 * v / len(cifs), 3) for k, v in seconds.items()},
        "forward_one_network_ms_per_crystal": round(1e3 * one_network / len(cifs), 3),
        "crystals_per_s_one_core": round(len(cifs) / total, 1),
    }


def load_predictor(model: str) -> tuple[Predictor, str]:
    try:
        return Predictor.load(model, device="cpu"), model
    except FileNotFoundError as exc:
        print(f"note: {exc}; timing an untrained SEN of the default size instead")
        return Predictor.untrained(device="cpu"), "untrained (default SENConfig)"


def markdown(rows: dict[str, dict[str, float]], batch: dict[str, float]) -> str:
    lines = [
        "| crystal | atoms / orbit rows | parse (ms) | symmetry (ms) | graph (ms) | forward (ms) | one network (ms) "
        "| ratio | forward, every atom (ms) | one network, every atom | in turn, every atom | end to end (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['n_atoms']} / {r['rows']} | {r['parse_ms']:.2f} | {r['symmetry_ms']:.2f} "
            f"| {r['graph_ms']:.2f} | {r['forward_ms']:.2f} | {r['forward_one_network_ms']:.2f} "
            f"| {r['forward_ms'] / r['forward_one_network_ms']:.1f}x | {r['forward_every_atom_ms']:.2f} "
            f"| {r['forward_one_network_every_atom_ms']:.2f} | {r['forward_networks_in_turn_every_atom_ms']:.2f} "
            f"| {r['end_to_end_ms']:.2f} |"
        )
    lines.append("")
    lines.append(
        f"Batch of {batch['n_crystals']} mixed gallery crystals ({batch['n_atoms_total']} atoms): "
        f"{batch['crystals_per_s']:.0f} crystals/s from structures, "
        f"{batch['crystals_per_s_from_cif_text']:.0f} crystals/s from CIF text."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sen_mp", help="a shipped model's name or the path of a model.pt")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per measurement (median reported)")
    parser.add_argument("--out", default=str(RESULTS), help="where to write the JSON results")
    parser.add_argument("--split-crystals", type=int, default=1000,
                        help="test-split crystals of ../shared/data for the per-stage breakdown (0: skip)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    predictor, model_name = load_predictor(args.model)
    rows = {}
    for name, cif in benchmark_crystals().items():
        repeats = max(3, args.repeats // 5) if "224" in name else args.repeats
        rows[name] = stage_times(predictor, cif, repeats)
    batch = batch_throughput(predictor)
    stages = split_stages(predictor, args.split_crystals) if args.split_crystals else None
    end_to_end = rows[TARGET_CRYSTAL]["end_to_end_ms"]
    met = end_to_end < TARGET_MS
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model_name,
        "parameters": sum(p.numel() for p in predictor.model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_min": load,
        "repeats": args.repeats,
        "crystals": rows,
        "batch": batch,
        "test_split_stages": stages,
        "target": {"crystal": TARGET_CRYSTAL, "end_to_end_ms_below": TARGET_MS, "measured_ms": end_to_end, "met": met},
    }
    print(markdown(rows, batch))
    if stages:
        per = ", ".join(f"{k} {v:.2f}" for k, v in stages["ms_per_crystal"].items())
        print(f"\n{stages['n_crystals']} test-split crystals ({stages['atoms']} atoms, {stages['orbit_rows']} orbit rows), "
              f"batches of 64, one core: {stages['crystals_per_s_one_core']} crystals/s; ms per crystal: {per}; "
              f"one network's forward alone {stages['forward_one_network_ms_per_crystal']:.2f}")
    print()
    print(f"Target: end to end under {TARGET_MS:.0f} ms for {TARGET_CRYSTAL} on one core: "
          f"{'met' if met else 'NOT met'} ({end_to_end:.1f} ms).")  # fmt: skip
    if load and load[0] > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {load[0]:.1f} on {os.cpu_count()} cores; other work slowed these timings")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
