"""Datasets for training: read the formats people have, featurise once, cache on disk, split.

Formats (picked with :func:`detect_dataset_format` or by name):

* ``jsonl`` - gzip or plain JSON Lines with a ``cif`` column (``../shared/data/mp_crystals``);
  a folder of such files is read in name order.
* ``matbench`` - Matbench-style ``json(.gz)``: ``{"columns": [...], "index": [...], "data": [[structure, target], ...]}``.
* ``cgcnn`` - a folder of CIFs with an ``id_prop.csv`` (``id,target[,target...]``, no header).
* ``csv`` - a CSV with a ``cif`` column, an id column and target columns.

Bad records are skipped and counted by reason in a :class:`LoadReport`, never silently.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sen.errors import StructureError
from sen.graph import CrystalGraph, GraphConfig, build_graph
from sen.io import read_structure

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "mp_crystals"  # ../shared beside the repo
#: Formation energies below this (eV/atom) are unphysical outliers in MP-derived data.
MIN_FORMATION_ENERGY = -5.0
ID_COLUMNS = ("material_id", "id", "mp_id", "mpid", "name")


class DatasetError(StructureError):
    """A dataset file or folder cannot be used (missing, wrong format, no targets)."""


@dataclass
class RawRecord:
    """One crystal before featurisation: its id, its structure text (or dict) and its targets."""

    id: str
    structure: str | dict  # CIF text, or a pymatgen Structure dict
    fmt: str  # "cif" or "json"
    targets: dict[str, float]


@dataclass
class LoadReport:
    """What happened to every record: kept, or skipped and why."""

    total: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        """Count one skipped record."""
        self.skipped[reason] += 1

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"total": self.total, "kept": self.kept, "skipped": dict(self.skipped)}

    def __str__(self) -> str:
        lines = [f"{self.total} records read, {self.kept} kept, {sum(self.skipped.values())} skipped"]
        lines += [f"  skipped {n}: {reason}" for reason, n in self.skipped.most_common()]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading raw records


def detect_dataset_format(path: Path) -> str:
    """Guess a dataset's format from its path."""
    if path.is_dir():
        if (path / "id_prop.csv").is_file():
            return "cgcnn"
        if any(path.glob("*.jsonl*")):
            return "jsonl"
        raise DatasetError(f"{path} is a folder without id_prop.csv or *.jsonl(.gz) files")
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    if name.endswith((".json", ".json.gz")):
        return "matbench"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise DatasetError(f"cannot tell the format of {path}; use .jsonl(.gz), .json(.gz), .csv or a CGCNN folder")


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def _record_id(row: dict, fallback: str) -> str:
    for key in ID_COLUMNS:
        if row.get(key) not in (None, ""):
            return str(row[key])
    return fallback


def _targets_from_row(row: dict, targets: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for t in targets:
        v = row.get(t)
        try:
            out[t] = float(v) if v is not None and v != "" else math.nan
        except (TypeError, ValueError):
            out[t] = math.nan
    return out


def iter_raw_records(path: str | Path, targets: tuple[str, ...], fmt: str | None = None) -> Iterator[RawRecord]:
    """Yield raw records from a dataset in any supported format."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset not found: {path}")
    fmt = fmt or detect_dataset_format(path)
    if fmt == "jsonl":
        files = sorted(path.glob("*.jsonl*")) if path.is_dir() else [path]
        for f in files:
            with _open_text(f) as fh:
                for line_no, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        yield RawRecord(f"{f.name}:{line_no}", "", "invalid-json", {})
                        continue
                    yield RawRecord(
                        _record_id(row, f"{f.name}:{line_no}"),
                        row.get("cif") or "",
                        "cif",
                        _targets_from_row(row, targets),
                    )
    elif fmt == "matbench":
        with _open_text(path) as fh:
            obj = json.load(fh)
        columns = obj.get("columns") or []
        if "structure" not in columns:
            raise DatasetError(f"{path} is not a Matbench-style file (no 'structure' column)")
        s_col = columns.index("structure")
        target_cols = [c for c in columns if c != "structure"]
        index = obj.get("index") or list(range(len(obj["data"])))
        for idx, row in zip(index, obj["data"], strict=False):
            values = dict(zip(columns, row, strict=False))
            # a Matbench file has one target column: map it to the single requested target
            if len(targets) == 1 and len(target_cols) == 1 and targets[0] not in values:
                values[targets[0]] = values[target_cols[0]]
            yield RawRecord(str(idx), row[s_col], "json", _targets_from_row(values, targets))
    elif fmt == "cgcnn":
        with open(path / "id_prop.csv", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if not row:
                    continue
                cid, values = row[0].strip(), row[1:]
                cif_path = path / f"{cid}.cif"
                text = cif_path.read_text(encoding="utf-8", errors="replace") if cif_path.is_file() else ""
                yield RawRecord(cid, text, "cif", _targets_from_row(dict(zip(targets, values, strict=False)), targets))
    elif fmt == "csv":
        with _open_text(path) as fh:
            reader = csv.DictReader(fh)
            cols = {c.lower(): c for c in (reader.fieldnames or [])}
            if "cif" not in cols:
                raise DatasetError(f"{path} has no 'cif' column")
            for n, row in enumerate(reader, 1):
                yield RawRecord(
                    _record_id(row, f"row{n}"), row[cols["cif"]] or "", "cif", _targets_from_row(row, targets)
                )
    else:
        raise DatasetError(f"unknown dataset format {fmt!r}")


# ----------------------------------------------------------------------------- featurisation


def _featurise_one(args: tuple[RawRecord, GraphConfig, int]) -> tuple[str, CrystalGraph | None, dict, str | None]:
    rec, config, max_atoms = args
    bad = _target_problem(rec.targets)
    if rec.fmt == "invalid-json":
        return rec.id, None, rec.targets, "line is not valid JSON"
    if bad:
        return rec.id, None, rec.targets, bad
    if not rec.structure:
        return rec.id, None, rec.targets, "no structure (empty or missing CIF)"
    try:
        if rec.fmt == "json":
            from pymatgen.core import Structure

            from sen.io import validate_structure

            try:
                structure = Structure.from_dict(rec.structure)
            except Exception:  # KeyError, ValueError, TypeError for a malformed dict
                raise StructureError("could not read this pymatgen Structure dict") from None
            validate_structure(structure, max_atoms=max_atoms)
        else:
            structure = read_structure(rec.structure.encode("utf-8"), fmt="cif", max_atoms=max_atoms)
        graph = build_graph(structure, config)
    except StructureError as exc:
        return rec.id, None, rec.targets, _reason_category(str(exc))
    except Exception as exc:  # a record we cannot featurise must not stop the run
        return rec.id, None, rec.targets, f"featurisation failed ({type(exc).__name__})"
    return rec.id, graph, rec.targets, None


def _target_problem(targets: dict[str, float]) -> str | None:
    for t, v in targets.items():
        if not math.isfinite(v):
            return f"missing or non-finite {t}"
        if t == "formation_energy_per_atom" and v < MIN_FORMATION_ENERGY:
            return f"unphysical formation energy (< {MIN_FORMATION_ENERGY} eV/atom)"
    return None


def _reason_category(message: str) -> str:
    """Collapse per-record details (atom indices, distances) so the report groups similar problems."""
    for key, reason in (
        ("partial occupanc", "partial occupancies / disorder"),
        ("apart (minimum", "atoms closer than 0.5 Å"),
        ("atoms per cell", "too many atoms"),
        ("could not read", "unparseable structure"),
        ("dummy species", "unknown or dummy species"),
    ):
        if key in message:
            return reason
    return message.split(";")[0][:80]


@dataclass
class PackedGraphs:
    """Many crystal graphs packed into flat arrays (what the cache stores)."""

    ids: np.ndarray  # (C,) str
    targets: np.ndarray  # (C, T) float32
    target_names: tuple[str, ...]
    n_atoms: np.ndarray  # (C,)
    n_edges: np.ndarray  # (C,)
    atomic_numbers: np.ndarray
    orbit_index: np.ndarray
    site_point_group: np.ndarray
    site_symmetry_order: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_length: np.ndarray
    crystal_system: np.ndarray
    point_group: np.ndarray
    n_cells: np.ndarray | None = None  # (C,) float32 primitive cells per crystal; None (older caches): all 1

    def __post_init__(self) -> None:
        if self.n_cells is None:
            self.n_cells = np.ones(len(self.ids), dtype=np.float32)
        self._atom_start = np.concatenate([[0], np.cumsum(self.n_atoms)])
        self._edge_start = np.concatenate([[0], np.cumsum(self.n_edges)])

    def __len__(self) -> int:
        return len(self.ids)

    def graph(self, i: int) -> CrystalGraph:
        """The i-th crystal as a CrystalGraph (array views, no copies)."""
        a0, a1 = self._atom_start[i], self._atom_start[i + 1]
        e0, e1 = self._edge_start[i], self._edge_start[i + 1]
        return CrystalGraph(
            atomic_numbers=self.atomic_numbers[a0:a1],
            edge_src=self.edge_src[e0:e1],
            edge_dst=self.edge_dst[e0:e1],
            edge_length=self.edge_length[e0:e1],
            orbit_index=self.orbit_index[a0:a1],
            site_point_group=self.site_point_group[a0:a1],
            site_symmetry_order=self.site_symmetry_order[a0:a1],
            crystal_system=int(self.crystal_system[i]),
            point_group=int(self.point_group[i]),
            n_cells=float(self.n_cells[i]),
        )

    @classmethod
    def pack(cls, ids: list[str], graphs: list[CrystalGraph], targets: list[dict], names: tuple[str, ...]):
        """Pack featurised crystals."""

        def cat(attr: str, dtype) -> np.ndarray:
            if not graphs:
                return np.zeros(0, dtype=dtype)
            return np.concatenate([getattr(g, attr) for g in graphs]).astype(dtype)

        return cls(
            ids=np.array(ids, dtype=str),
            targets=np.array([[t[n] for n in names] for t in targets], dtype=np.float32).reshape(len(ids), len(names)),
            target_names=tuple(names),
            n_atoms=np.array([g.n_atoms for g in graphs], dtype=np.int64),
            n_edges=np.array([len(g.edge_src) for g in graphs], dtype=np.int64),
            atomic_numbers=cat("atomic_numbers", np.int16),
            orbit_index=cat("orbit_index", np.int32),
            site_point_group=cat("site_point_group", np.int16),
            site_symmetry_order=cat("site_symmetry_order", np.int16),
            edge_src=cat("edge_src", np.int32),
            edge_dst=cat("edge_dst", np.int32),
            edge_length=cat("edge_length", np.float32),
            crystal_system=np.array([g.crystal_system for g in graphs], dtype=np.int16),
            point_group=np.array([g.point_group for g in graphs], dtype=np.int16),
            n_cells=np.array([g.n_cells for g in graphs], dtype=np.float32),
        )

    def save(self, path: Path) -> None:
        """Write to an ``.npz`` file (no pickles)."""
        arrays = {k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray) and not k.startswith("_")}
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # concurrent writers never share a temp file
        np.savez(tmp, target_names=np.array(self.target_names, dtype=str), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> PackedGraphs:
        """Read a cache written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        d["target_names"] = tuple(str(x) for x in d["target_names"])
        return cls(**d)


def _dataset_fingerprint(path: Path, targets: tuple[str, ...], fmt: str, max_atoms: int) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    h.update(f"{','.join(targets)}|{fmt}|{max_atoms}".encode())
    for f in files:  # by content, so a copied or re-downloaded dataset (new times, new place) keeps its cache
        h.update(f"{f.relative_to(path) if f != path else f.name}:{f.stat().st_size}:".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_dataset(
    path: str | Path = DEFAULT_DATA,
    targets: tuple[str, ...] = ("formation_energy_per_atom", "band_gap"),
    *,
    fmt: str | None = None,
    graph_config: GraphConfig | None = None,
    cache_dir: str | Path | None = ".cache/sen",
    workers: int | None = None,
    max_atoms: int = 500,
    limit: int | None = None,
    progress: bool = True,
) -> tuple[PackedGraphs, LoadReport]:
    """Read, validate and featurise a dataset, using (or filling) the on-disk cache.

    The cache key covers the dataset's files (names and contents), the targets and the
    featuriser settings, so a changed file or setting triggers a fresh featurisation.
    """
    path = Path(path)
    if not path.exists():  # before the cache key, which reads the files' sizes
        raise DatasetError(f"dataset not found: {path}")
    graph_config = graph_config or GraphConfig()
    fmt = fmt or detect_dataset_format(path)
    cache_file = report_file = None
    if cache_dir is not None:
        key = f"{_dataset_fingerprint(path, targets, fmt, max_atoms)}-{graph_config.key()}" + (
            f"-n{limit}" if limit else ""
        )
        cache_dir = Path(cache_dir)
        cache_file = cache_dir / f"{key}.npz"
        report_file = cache_dir / f"{key}.report.json"
        if cache_file.is_file() and report_file.is_file():
            rep = json.loads(report_file.read_text())
            report = LoadReport(rep["total"], rep["kept"], Counter(rep["skipped"]))
            return PackedGraphs.load(cache_file), report

    records = list(iter_raw_records(path, targets, fmt))
    if limit:
        records = records[:limit]
    report = LoadReport(total=len(records))
    workers = workers or min(os.cpu_count() or 1, 8)
    jobs = [(r, graph_config, max_atoms) for r in records]
    ids, graphs, tvals = [], [], []
    seen: set[str] = set()
    bar = tqdm(total=len(jobs), desc="featurising", unit="crystal", disable=not progress)
    if workers > 1 and len(jobs) > 200:
        with get_context("spawn").Pool(workers) as pool:
            results = pool.imap(_featurise_one, jobs, chunksize=64)
            for res in results:
                _collect(res, ids, graphs, tvals, seen, report)
                bar.update()
    else:
        for job in jobs:
            _collect(_featurise_one(job), ids, graphs, tvals, seen, report)
            bar.update()
    bar.close()
    report.kept = len(ids)
    if not ids:
        raise DatasetError(f"no usable records in {path}: {report}")
    packed = PackedGraphs.pack(ids, graphs, tvals, targets)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # the report first, both atomically: a reader that finds both files gets a complete pair
        tmp_report = report_file.with_name(f"{report_file.name}.{os.getpid()}.tmp")
        tmp_report.write_text(json.dumps(report.to_dict(), indent=1))
        os.replace(tmp_report, report_file)
        packed.save(cache_file)
    return packed, report


def _collect(res, ids, graphs, tvals, seen, report) -> None:
    rid, graph, targets, reason = res
    if reason is None and rid in seen:
        reason = "duplicate id"
    if reason is not None:
        report.skip(reason)
        return
    seen.add(rid)
    ids.append(rid)
    graphs.append(graph)
    tvals.append(targets)


# ----------------------------------------------------------------------------- splitting


def split_ids(
    ids: list[str] | np.ndarray, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)
) -> dict[str, list[str]]:
    """Deterministic train/validation/test split by id (80/10/10 by default).

    Each id goes to a split by a hash of ``seed`` and the id alone, so the split does not
    depend on record order and an id keeps its split when records are added.
    """
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for cid in ids:
        u = int.from_bytes(hashlib.sha256(f"{seed}:{cid}".encode()).digest()[:8], "big") / 2**64
        key = "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"
        out[key].append(str(cid))
    return out
