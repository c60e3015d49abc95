"""The ``sen`` command: predict, symmetry, train, evaluate.

Every error a user can cause is printed as one line starting with ``error:``; no
tracebacks. Exit status: 0 success, 1 some input failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import warnings

from sen.errors import StructureError, first_line

PREDICT_COLUMNS = (
    "file",
    "formula",
    "space_group",
    "band_gap_eV",
    "band_gap_std_eV",
    "formation_energy_eV_per_atom",
    "formation_energy_std_eV_per_atom",
    "metal_probability",
    "error",
)  # the *_std columns: spread over an ensemble's networks (empty for a single network)


def _parser(train_options: bool = True) -> argparse.ArgumentParser:
    """The argument parser; ``train_options=False`` leaves out ``sen train``'s generated options, so that
    the other commands never import the training package."""
    p = argparse.ArgumentParser(prog="sen", description="SEN crystal property prediction and symmetry analysis.")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("predict", help="predict band gap (eV) and formation energy (eV/atom) for structure files")
    pr.add_argument("files", nargs="+", help="CIF, POSCAR/CONTCAR, extended XYZ or pymatgen JSON files")
    pr.add_argument("--format", choices=("table", "csv", "json"), default="table")
    pr.add_argument("--model", default=None, help="a shipped model's name or the path of a model.pt (default: sen_mp)")
    pr.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")

    sy = sub.add_parser("symmetry", help="print what spglib sees: space group, point group, Wyckoff orbits")
    sy.add_argument("file")
    sy.add_argument("--symprec", type=float, default=0.01, help="distance tolerance in Å (default 0.01)")
    sy.add_argument("--angle-tolerance", type=float, default=5.0, help="angle tolerance in degrees (default 5)")
    sy.add_argument("--json", action="store_true", help="print JSON instead of text")

    tr = sub.add_parser("train", help="train SEN (or the CGCNN baseline) on a dataset")
    tr.add_argument("--config", help="TOML file with training settings (see configs/)")
    if train_options:
        _add_train_overrides(tr)
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")

    sc = sub.add_parser("screen", help="predict for many crystals into a Parquet or CSV file, resumably")
    sc.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="folders of structure files, .jsonl(.gz) / .csv / .parquet with a cif column, ASE .db files")  # fmt: skip
    sc.add_argument("--out", required=True, help="results.parquet, or results.csv for CSV")
    sc.add_argument("--engine", choices=("auto", "local", "ray"), default="auto",
                    help="local process pool, or Ray (auto: Ray when installed and --address / RAY_ADDRESS is set)")  # fmt: skip
    sc.add_argument("--workers", type=int, default=None,
                    help="worker processes (local) or CPUs of a local Ray (default: all cores; 0: in this process)")  # fmt: skip
    sc.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS; none: a local Ray)")
    sc.add_argument("--actors", type=int, default=None, help="Ray: predicting actors (default: one per GPU, else CPUs/2)")
    sc.add_argument("--model", default=None, help="a shipped model's name or the path of a model.pt (default: sen_mp)")
    sc.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    sc.add_argument("--batch-size", type=int, default=64, help="crystals per network call (default 64)")
    sc.add_argument("--part-rows", type=int, default=5000, help="rows per committed part file (default 5000)")
    sc.add_argument("--overwrite", action="store_true", help="start again: remove the output and its parts first")
    sc.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="MAE, RMSE, R² and a parity plot for a model on a dataset")
    ev.add_argument("--model", required=True, help="model.pt, a folder with one, or a shipped model's name")
    ev.add_argument("--data", required=True, help="dataset (same formats as train)")
    ev.add_argument("--data-format", choices=("jsonl", "matbench", "cgcnn", "csv"))
    ev.add_argument("--targets", help="comma-separated target columns (default: the model's targets)")
    ev.add_argument("--split", choices=("all", "train", "val", "test"), default="all",
                    help="evaluate on one part of the split stored beside the model (split.json)")  # fmt: skip
    ev.add_argument("--out", default="evaluation", help="folder for parity plots and metrics.json")
    ev.add_argument("--device", default=None)
    from sen.library import add_library_parser  # numpy and Parquet only when a library command runs

    add_library_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sen`` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(train_options="train" in argv[:1]).parse_args(argv)
    warnings.filterwarnings("ignore")
    _set_threads()
    try:
        return {"predict": _predict, "symmetry": _symmetry, "train": _train, "evaluate": _evaluate,
                "screen": _screen, "library": lambda a: a.run_library(a)}[args.command](args)
    except (StructureError, FileNotFoundError, ValueError) as exc:  # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as exc:
        print(f"error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1


def _set_threads() -> None:
    """torch's CPU threads: ``SEN_THREADS``, else one (a network this small gains nothing from more
    threads per crystal, and they fight the other processes of a machine for its cores)."""
    import torch

    threads = os.environ.get("SEN_THREADS", "1")
    torch.set_num_threads(max(1, int(threads)) if threads.isdigit() else 1)


def _predict(args) -> int:
    from sen.io import read_structure
    from sen.predict import Predictor

    predictor = Predictor.load(args.model or "sen_mp", device=args.device)
    rows, failed = [], 0
    for f in args.files:
        row = dict.fromkeys(PREDICT_COLUMNS)  # None: no value (null in JSON, empty in a table or CSV)
        row["file"] = f
        try:
            s = read_structure(f)
            result = predictor.predict(s)[0]
            row.update(
                formula=s.composition.reduced_formula,
                space_group=f"{result['space_group_symbol']} ({result['space_group_number']})",
                band_gap_eV=round(result["band_gap"], 4),
                formation_energy_eV_per_atom=round(result["formation_energy_per_atom"], 4),
                metal_probability=round(result.get("metal_probability", float("nan")), 3),
            )
            if "band_gap_std" in result:
                row["band_gap_std_eV"] = round(result["band_gap_std"], 4)
            if "formation_energy_per_atom_std" in result:
                row["formation_energy_std_eV_per_atom"] = round(result["formation_energy_per_atom_std"], 4)
        except StructureError as exc:
            row["error"] = str(exc)
            failed += 1
        rows.append(row)
    sys.stdout.write(format_rows(rows, args.format))
    return 1 if failed else 0


def format_rows(rows: list[dict], fmt: str) -> str:
    """Render prediction rows as an aligned table, CSV or JSON."""
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    rows = [{k: "" if v is None else v for k, v in r.items()} for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=PREDICT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    cols = PREDICT_COLUMNS[:-1]
    good = [r for r in rows if not r["error"]]
    widths = {c: max([len(c)] + [len(str(r[c])) for r in good]) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    for r in rows:
        if r["error"]:
            lines.append(f"error: {r['file']}: {r['error']}")
        else:
            lines.append("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return "\n".join(lines) + "\n"


def _screen(args) -> int:
    """``sen screen``: the summary on stderr; exit status 1 when some records failed. SIGTERM, like
    Ctrl-C, commits the rows so far (re-running the same command resumes)."""
    import signal

    from sen.screen import screen

    def _stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        summary = screen(args.inputs, args.out, model=args.model or "sen_mp", device=args.device, engine=args.engine,
                         workers=args.workers, address=args.address, actors=args.actors, batch_size=args.batch_size,
                         part_rows=args.part_rows, overwrite=args.overwrite, progress=not args.no_progress)  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 1 if summary.failed else 0


def _symmetry(args) -> int:
    from sen.io import read_structure
    from sen.symmetry import analyze_symmetry

    s = read_structure(args.file)
    report = analyze_symmetry(s, args.symprec, args.angle_tolerance)
    if args.json:
        print(json.dumps(symmetry_to_dict(report, s.composition.reduced_formula), indent=1))
    else:
        print(f"Formula: {s.composition.reduced_formula} ({len(s)} atoms in the cell)")
        print(report.summary())
    return 0


def symmetry_to_dict(report, formula: str) -> dict:
    """JSON-ready symmetry report."""
    return {
        "formula": formula,
        "space_group_symbol": report.space_group_symbol,
        "space_group_number": report.space_group_number,
        "hall_symbol": report.hall_symbol,
        "point_group": report.point_group,
        "crystal_system": report.crystal_system,
        "symprec": report.symprec,
        "angle_tolerance": report.angle_tolerance,
        "orbits": [
            {
                "label": o.label,
                "element": o.element,
                "wyckoff_letter": o.wyckoff_letter,
                "multiplicity": o.multiplicity,
                "site_symmetry": o.site_symmetry,
                "atom_indices": list(o.atom_indices),
            }
            for o in report.orbits
        ],
    }


def _add_train_overrides(parser: argparse.ArgumentParser) -> None:
    """One option per setting of :class:`~sen.training.config.TrainConfig` (and its network and featuriser
    parts), generated from the dataclasses: ``--batch-size`` sets ``batch_size``."""
    from sen.training.config import override_options

    for name, _, kwargs in override_options():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, **kwargs)


def _train(args) -> int:
    from sen.training.config import TrainConfig, override_options
    from sen.training.loop import train

    overrides = {name: getattr(args, name) for name, _, _ in override_options() if getattr(args, name) is not None}
    if args.no_progress:
        overrides["progress"] = False
    cfg = TrainConfig.from_file(args.config, **overrides) if args.config else TrainConfig.from_dict(overrides)
    train(cfg, resume=args.resume)
    return 0


def _evaluate(args) -> int:
    from sen.training.evaluate import evaluate

    targets = tuple(args.targets.split(",")) if args.targets else None
    result = evaluate(args.model, args.data, targets=targets, fmt=args.data_format, split=args.split,
                      out_dir=args.out, device=args.device)  # fmt: skip
    for t, m in result["metrics"].items():
        print(f"{t}: MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}  R² {m['r2']:.4f}  (n = {m['n']})")
    print(f"parity plots and metrics written to {args.out}/")
    return 0
