"""Screen many crystals: ``sen screen`` and :meth:`sen.predict.Predictor.screen`.

One result row per input record, written as it goes, resumable after any interruption:

* **Inputs** (:func:`open_sources`): a folder of structure files (CIF, POSCAR/CONTCAR, extended
  XYZ, pymatgen JSON; searched recursively, and any data files below are read too), gzip or plain
  JSON Lines or CSV with a ``cif`` column, Parquet with a ``cif`` column, an ASE database (``.db``),
  or single structure files. Every record gets a *key* from its place in the input (source number,
  row), which is what resuming skips by, and keeps its id (``material_id`` / ``id`` column, the
  file name, or ``<file>:<line>``).
* **Rows** (:data:`SCREEN_COLUMNS`): id, where it came from, formula, atoms, space group, each
  prediction with its unit in the column name, the spread of the ensemble's networks, the metal
  probability, the model's name and version (a hash of its weights), and for a record that could
  not be used its one-line reason in ``error`` with null predictions. Rows out = records in.
* **Output** (:class:`PartWriter`): rows go to ``<out>.parts/part-NNNNNN.<ext>``, each part
  written to a temporary name and renamed (so a part is either whole or absent, whatever kills the
  process); a re-run reads the keys of the committed parts and skips those records; at the end the
  parts are merged into ``<out>.tmp``, renamed to ``<out>`` and removed. ``<out>`` itself is only
  ever a complete file.
* **Engines**: a local process pool (:func:`iter_local`, each worker loads the model once and uses
  one torch thread; ``workers=0`` runs in this process), or Ray Data (:mod:`sen.screen_ray`).

Memory is bounded: records are read lazily, at most ``2 x workers`` chunks are in flight, a part
holds at most ``part_rows`` rows, and the only state that grows is one 64-bit key per record already
written (8 bytes each: 8 MB for a million crystals).
"""

from __future__ import annotations

import csv
import fcntl
import functools
import gzip
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sen.errors import StructureError, first_line

#: Columns of every result row, in order. Units are in the names; the ``*_std`` columns are the
#: spread of an ensemble's networks (null for a single network); ``error`` is null for a good row.
SCREEN_COLUMNS = (
    "id",
    "source",
    "row",
    "formula",
    "n_atoms",
    "space_group",
    "space_group_number",
    "band_gap_eV",
    "band_gap_std_eV",
    "formation_energy_eV_per_atom",
    "formation_energy_std_eV_per_atom",
    "metal_probability",
    "is_metal",
    "model",
    "model_version",
    "error",
)
#: Arrow type of each column (and of ``_key``, the resume key kept in the part files only).
COLUMN_TYPES = {
    "id": "string", "source": "string", "row": "int64", "formula": "string", "n_atoms": "int64",
    "space_group": "string", "space_group_number": "int64", "band_gap_eV": "float64",
    "band_gap_std_eV": "float64", "formation_energy_eV_per_atom": "float64",
    "formation_energy_std_eV_per_atom": "float64", "metal_probability": "float64", "is_metal": "bool",
    "model": "string", "model_version": "string", "error": "string", "_key": "int64",
}  # fmt: skip
#: Which prediction (a key of :meth:`Predictor.predict`'s dicts) fills which column.
PREDICTION_COLUMNS = {
    "band_gap": "band_gap_eV",
    "band_gap_std": "band_gap_std_eV",
    "formation_energy_per_atom": "formation_energy_eV_per_atom",
    "formation_energy_per_atom_std": "formation_energy_std_eV_per_atom",
    "metal_probability": "metal_probability",
    "is_metal": "is_metal",
}
ID_COLUMNS = ("material_id", "id", "mp_id", "mpid", "name")
STRUCTURE_SUFFIXES = (".cif", ".mcif", ".vasp", ".poscar", ".contcar", ".xyz", ".extxyz", ".json")
INSTALL_HINT = 'pip install "sen-crystal-explorer[screen]"'
_ROW_BITS = 40  # key = source number << 40 | row: a million sources of a trillion rows each


class ScreenError(StructureError):
    """An input, output or option ``sen screen`` cannot use; the message says what to do."""


# ----------------------------------------------------------------------------- records and sources


@dataclass
class Record:
    """One crystal to screen, before parsing: where it is, its id, and its structure as given."""

    key: int  # source number << 40 | row: the record's place in the input, what resuming skips by
    id: str
    source: str
    row: int
    data: object = None  # text (CIF, POSCAR, ...), a file path, ASE JSON, a Structure, or None
    fmt: str | None = None  # cif / poscar / extxyz / json / path / ase / structure / None (guess)
    problem: str | None = None  # a problem found while reading (e.g. a line that is not JSON)


def _make_key(source_index: int, row: int) -> int:
    return (source_index << _ROW_BITS) | row


def _first_present(row: dict, columns: Iterable[str]) -> str | None:
    for c in columns:
        v = row.get(c)
        if v not in (None, "") and not (isinstance(v, float) and v != v):
            return str(v)
    return None


def is_structure_file(p: Path) -> bool:
    name = p.name.upper()
    return p.suffix.lower() in STRUCTURE_SUFFIXES or name.startswith(("POSCAR", "CONTCAR"))


def _data_kind(p: Path) -> str | None:
    """The kind of a data file from its name, or None for anything else."""
    name = p.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json.gz")):
        return "jsonl"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".db"):
        return "asedb"
    return None


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def _need_pyarrow(what: str):
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise ScreenError(f"{what} needs pyarrow: {INSTALL_HINT} (or pip install pyarrow)") from None
    return pq


@dataclass
class Source:
    """One readable input: a data file (jsonl, csv, parquet, asedb) or a list of structure files."""

    index: int
    kind: str  # files | jsonl | csv | parquet | asedb
    name: str  # as shown in the ``source`` column
    path: Path
    files: list[Path] = field(default_factory=list)  # kind "files": the structure files, sorted

    def fingerprint(self) -> dict:
        """What identifies this input for resuming: name, kind and size (and modification time)."""
        if self.kind == "files":
            h = hashlib.sha256()
            for f in self.files:
                h.update(f"{f}\0{f.stat().st_size}\n".encode())
            return {"name": self.name, "kind": self.kind, "files": len(self.files), "sha256": h.hexdigest()[:16]}
        st = self.path.stat()
        return {"name": self.name, "kind": self.kind, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def count(self) -> int | None:
        """Number of records (a quick pass over the file; None when unknown)."""
        if self.kind == "files":
            return len(self.files)
        if self.kind == "parquet":
            return _need_pyarrow("reading Parquet").ParquetFile(self.path).metadata.num_rows
        if self.kind == "asedb":
            import ase.db

            return ase.db.connect(str(self.path)).count()
        if self.kind == "jsonl":
            with _open_text(self.path) as fh:
                return sum(1 for line in fh if line.strip())
        with _open_text(self.path) as fh:  # csv: CIF fields span lines, so count rows, not lines
            return max(sum(1 for _ in csv.reader(fh)) - 1, 0)

    def shards(self, rows: int = 1000) -> list[tuple[int, int | None]]:
        """Row ranges ``[start, stop)`` that can be read independently (``stop`` None: to the end)."""
        if self.kind in ("files", "asedb"):
            n = self.count() or 0
            return [(s, min(s + rows, n)) for s in range(0, n, rows)]
        if self.kind == "parquet":
            meta = _need_pyarrow("reading Parquet").ParquetFile(self.path).metadata
            out, start = [], 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                out.append((start, start + n))
                start += n
            return out
        return [(0, None)]  # a compressed stream is read from its start

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        """The records with row in ``[start, stop)``, in order."""
        return getattr(self, f"_read_{self.kind}")(start, stop)

    def _record(self, row: int, rid: str, data=None, fmt=None, problem=None) -> Record:
        return Record(_make_key(self.index, row), rid, self.name, row, data, fmt, problem)

    def _read_files(self, start, stop):
        for i in range(start, len(self.files) if stop is None else min(stop, len(self.files))):
            f = self.files[i]
            rid = f.relative_to(self.path).as_posix() if self.path.is_dir() else f.name
            yield self._record(i, rid, str(f), "path")

    def _read_jsonl(self, start, stop):
        with _open_text(self.path) as fh:
            row = -1
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row += 1
                if row < start:
                    continue
                if stop is not None and row >= stop:
                    break
                fallback = f"{self.path.name}:{line_no}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield self._record(row, fallback, problem=f"line {line_no} is not valid JSON ({exc.msg})")
                    continue
                if not isinstance(obj, dict):
                    yield self._record(row, fallback, problem=f"line {line_no} is not a JSON object")
                    continue
                yield self._from_mapping(row, obj, fallback)

    def _from_mapping(self, row: int, obj: dict, fallback: str) -> Record:
        lower = {str(k).lower(): v for k, v in obj.items()}
        rid = _first_present(lower, ID_COLUMNS) or fallback
        cif = lower.get("cif")
        if isinstance(cif, bytes):
            cif = cif.decode("utf-8", errors="replace")
        if isinstance(cif, str) and cif.strip():
            return self._record(row, rid, cif, "cif")
        structure = lower.get("structure")
        if isinstance(structure, dict):
            return self._record(row, rid, json.dumps(structure), "json")
        return self._record(row, rid)  # no structure: an error row

    def _read_csv(self, start, stop):
        csv.field_size_limit(1 << 27)  # a CIF in one field can be long
        with _open_text(self.path) as fh:
            reader = csv.DictReader(fh)
            if "cif" not in {c.lower() for c in reader.fieldnames or []}:
                raise ScreenError(f"{self.name} has no 'cif' column (columns: {', '.join(reader.fieldnames or [])})")
            for row, obj in enumerate(reader):
                if row < start:
                    continue
                if stop is not None and row >= stop:
                    break
                yield self._from_mapping(row, obj, f"{self.path.name}:row{row}")

    def _read_parquet(self, start, stop):
        pq = _need_pyarrow("reading Parquet")
        pf = pq.ParquetFile(self.path)
        names = pf.schema_arrow.names
        lower = {n.lower(): n for n in names}
        if "cif" not in lower:
            raise ScreenError(f"{self.name} has no 'cif' column (columns: {', '.join(names)})")
        columns = [lower["cif"]] + [lower[c] for c in ID_COLUMNS if c in lower]
        meta, first = pf.metadata, 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if first + n <= start or (stop is not None and first >= stop):
                first += n
                continue
            table = pf.read_row_group(g, columns=columns)
            for i, obj in enumerate(table.to_pylist()):
                row = first + i
                if row >= start and (stop is None or row < stop):
                    yield self._from_mapping(row, obj, f"{self.path.name}:row{row}")
            first += n

    def _read_asedb(self, start, stop):
        import ase.db

        db = ase.db.connect(str(self.path))
        limit = None if stop is None else max(stop - start, 0)
        if limit == 0:
            return
        for i, r in enumerate(db.select(offset=start, limit=limit, sort="id", include_data=False)):
            kv = r.key_value_pairs
            rid = _first_present({k.lower(): v for k, v in kv.items()}, ID_COLUMNS) or str(r.id)
            atoms = {"numbers": r.numbers.tolist(), "positions": r.positions.tolist(),
                     "cell": np.asarray(r.cell).tolist(), "pbc": np.asarray(r.pbc).tolist()}  # fmt: skip
            yield self._record(start + i, rid, json.dumps(atoms), "ase")


def open_sources(inputs: Iterable[str | Path]) -> list[Source]:
    """The sources of ``sen screen INPUT...``: folders expanded (structure files and data files),
    data files and single structure files, numbered in the order given.

    Raises:
        ScreenError: an input that does not exist or that holds nothing to screen.
    """
    sources: list[Source] = []
    for given in inputs:
        path = Path(given)
        if not path.exists():
            raise ScreenError(f"input not found: {given}")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            data = [p for p in found if _data_kind(p)]
            structures = [p for p in found if not _data_kind(p) and is_structure_file(p)]
            if not data and not structures:
                raise ScreenError(
                    f"{given} holds no structure files (.cif, POSCAR, .xyz, .json) or data files "
                    "(.jsonl.gz, .csv, .parquet, .db)"
                )
            if structures:
                sources.append(Source(len(sources), "files", str(given), path, structures))
            for p in data:
                sources.append(Source(len(sources), _data_kind(p), str(p), p))
        elif _data_kind(path):
            sources.append(Source(len(sources), _data_kind(path), str(given), path))
        else:  # a single structure file, whatever its name (read_structure guesses the format)
            sources.append(Source(len(sources), "files", str(given), path, [path]))
    if not sources:
        raise ScreenError("no input given")
    return sources


def iter_records(sources: list[Source], skip: np.ndarray | None = None) -> Iterator[Record]:
    """Every record of every source in order, leaving out the keys in ``skip`` (sorted int64)."""
    for src in sources:
        for rec in src.records():
            if skip is not None and len(skip) and _contains(skip, rec.key):
                continue
            yield rec


def _contains(sorted_keys: np.ndarray, key: int) -> bool:
    i = int(np.searchsorted(sorted_keys, key))
    return i < len(sorted_keys) and int(sorted_keys[i]) == key


def records_from_items(items: Iterable, source: str = "python") -> Iterator[Record]:
    """Records from what a notebook has: Structures, ``(id, structure)`` pairs, dicts with an id and
    a ``cif`` or ``structure``, file paths, or structure text. Row = position in ``items``."""
    from pymatgen.core import Structure

    for row, item in enumerate(items):
        rid, data = None, item
        if isinstance(item, tuple) and len(item) == 2:
            rid, data = str(item[0]), item[1]
        if isinstance(data, Structure):
            yield Record(row, rid or str(row), source, row, data, "structure")
        elif isinstance(data, dict) and "sites" not in data:
            tmp = Source(0, "jsonl", source, Path("."))
            rec = tmp._from_mapping(row, data, rid or str(row))
            rec.key, rec.id = row, rid or rec.id
            yield rec
        elif isinstance(data, dict):  # a pymatgen Structure dict
            yield Record(row, rid or str(row), source, row, json.dumps(data), "json")
        elif isinstance(data, Path) or (isinstance(data, str) and "\n" not in data and not data.lstrip().startswith("{")):
            yield Record(row, rid or Path(data).name, source, row, str(data), "path")
        elif isinstance(data, (str, bytes)):
            yield Record(row, rid or str(row), source, row, data, None)
        else:
            yield Record(row, rid or str(row), source, row,
                         problem=f"cannot screen a {type(data).__name__}; give Structures, paths, text or records")  # fmt: skip


# ----------------------------------------------------------------------------- featurise and predict


def _structure(rec: Record, max_atoms: int):
    """The validated pymatgen Structure of a record (raises StructureError)."""
    from sen.io import read_structure, validate_structure

    if rec.problem:
        raise StructureError(rec.problem)
    data = rec.data
    if data is None or (isinstance(data, (str, bytes)) and not data.strip()):
        raise StructureError("record has no structure (empty or missing 'cif')")
    if rec.fmt == "structure":
        return validate_structure(data, max_atoms=max_atoms)
    if rec.fmt == "path":
        return read_structure(str(data), max_atoms=max_atoms)
    if rec.fmt == "ase":
        from ase import Atoms
        from pymatgen.io.ase import AseAtomsAdaptor

        d = json.loads(data)
        atoms = Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=d["pbc"])
        if not atoms.pbc.any() or abs(atoms.cell.volume) < 1e-8:
            raise StructureError("this database row has no periodic cell, so it describes a molecule, not a crystal")
        return validate_structure(AseAtomsAdaptor.get_structure(atoms), max_atoms=max_atoms)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return read_structure(raw, fmt=rec.fmt, max_atoms=max_atoms)


def empty_row(rec: Record) -> dict:
    """A result row for ``rec`` with every other column null."""
    row = dict.fromkeys(SCREEN_COLUMNS)
    row.update(id=rec.id, source=rec.source, row=rec.row, _key=rec.key)
    return row


def featurise(rec: Record, graph_config, max_atoms: int):
    """Read, validate and featurise one record exactly as :meth:`Predictor.predict` does.

    Returns ``(row, graph)``: the row with id, formula, atoms and space group filled in, and the
    crystal graph; or the row with its ``error`` and ``None``. Never raises for a bad record.
    """
    from sen.graph import build_graph
    from sen.symmetry import analyze_symmetry

    row = empty_row(rec)
    try:
        s = _structure(rec, max_atoms)
        row.update(formula=s.composition.reduced_formula, n_atoms=len(s))
        report = analyze_symmetry(s, graph_config.symprec, graph_config.angle_tolerance)
        graph = build_graph(s, graph_config, report)
        row.update(space_group=report.space_group_symbol, space_group_number=int(report.space_group_number))
        return row, graph
    except StructureError as exc:
        row["error"] = first_line(exc, 300)
    except Exception as exc:  # a crystal that breaks a library must not stop the screen
        if isinstance(exc, MemoryError):
            row["error"] = "featurising this crystal needs more memory than is available; is its cell unusually large?"
        else:
            row["error"] = f"could not featurise this crystal ({type(exc).__name__}: {first_line(exc)})"
    return row, None


def model_version(predictor) -> str:
    """``sha256:`` and the first 12 hex digits of the weights file (``untrained`` without one)."""
    if predictor.path is None:
        return "untrained"
    stat = os.stat(predictor.path)
    return _weights_digest(str(predictor.path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _weights_digest(path: str, size: int, mtime_ns: int) -> str:
    """The digest of a weights file, read once per version of it (the app builds a Runner per batch chunk)."""
    del size, mtime_ns  # part of the cache key: a rewritten file is read again
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()[:12]


class Runner:
    """Featurise and predict chunks of records with one loaded :class:`~sen.predict.Predictor`."""

    def __init__(self, predictor, batch_size: int = 64):
        self.predictor = predictor
        self.batch_size = batch_size
        self.name = predictor.name
        self.version = model_version(predictor)

    def predict_into(self, rows: list[dict], graphs: list) -> None:
        """Fill the prediction columns of ``rows`` from their ``graphs`` (same order)."""
        import torch

        from sen.graph import collate

        p = self.predictor
        forward = getattr(p, "_forward", p.model)  # the stacked ensemble Predictor.predict runs, when there is one
        to_batch = getattr(p, "_batch", lambda gs: collate(gs).to(p.device))  # orbit rows, as Predictor.predict
        for start in range(0, len(graphs), self.batch_size):
            part, part_rows = graphs[start : start + self.batch_size], rows[start : start + self.batch_size]
            try:
                with torch.inference_mode():
                    preds = p._rows(forward(to_batch(part)), len(part))
            except Exception:  # one crystal that breaks the batch: predict one by one
                preds = []
                for g in part:
                    try:
                        with torch.inference_mode():
                            preds.append(p._rows(forward(to_batch([g])), 1)[0])
                    except Exception as exc:
                        preds.append({"error": f"prediction failed ({type(exc).__name__}: {first_line(exc)})"})
            for row, pred in zip(part_rows, preds, strict=True):
                if "error" in pred:
                    row["error"] = pred["error"]
                    continue
                for k, col in PREDICTION_COLUMNS.items():
                    if k in pred:
                        row[col] = bool(pred[k]) if k == "is_metal" else float(pred[k])

    def process(self, records: list[Record]) -> list[dict]:
        """One result row per record, in order."""
        rows, good_rows, graphs = [], [], []
        p = self.predictor
        for rec in records:
            row, graph = featurise(rec, p.graph_config, p.max_atoms)
            row.update(model=self.name, model_version=self.version)
            rows.append(row)
            if graph is not None:
                good_rows.append(row)
                graphs.append(graph)
        if graphs:
            self.predict_into(good_rows, graphs)
        return rows


# ----------------------------------------------------------------------------- the local engine

_RUNNER: Runner | None = None


def _exit_with(parent_pid: int) -> None:
    """A daemon thread that ends this worker when the screening process is gone (killed with SIGKILL,
    it cannot stop its workers; without this they would wait on their queue for ever)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # pragma: no cover - the pid now belongs to someone else's process
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="sen-screen-parent-watch").start()


def _init_worker(model_path: str, device: str | None, batch_size: int, parent_pid: int | None = None) -> None:
    """Process-pool initializer: one torch thread, the model loaded once, Ctrl-C left to the parent,
    and an exit of its own when the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid:
        _exit_with(parent_pid)
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from sen.predict import Predictor

    global _RUNNER
    _RUNNER = Runner(Predictor.load(model_path, device=device), batch_size)


def _work(records: list[Record]) -> list[dict]:
    return _RUNNER.process(records)


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def default_workers() -> int:
    """All the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def iter_local(
    records: Iterable[Record],
    predictor=None,
    *,
    model_path: str | Path | None = None,
    device: str | None = None,
    workers: int = 0,
    chunk_size: int = 32,
    batch_size: int = 64,
) -> Iterator[list[dict]]:
    """Result rows for ``records``, one list per chunk, in input order.

    ``workers=0``: in this process with ``predictor``. Otherwise a pool of ``workers`` processes
    (forkserver on Linux, else spawn), each loading ``model_path`` once; at most ``2 x workers``
    chunks are in flight, so memory stays bounded however long ``records`` is.
    """
    if workers <= 0:
        runner = Runner(predictor, batch_size)
        for chunk in _chunks(records, chunk_size):
            yield runner.process(chunk)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if model_path is None:
        raise ScreenError("worker processes load the model from a file; this predictor has none (use workers=0)")
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=_init_worker,
                               initargs=(str(model_path), device, batch_size, os.getpid()))  # fmt: skip
    pending: deque = deque()
    try:
        it = iter(_chunks(records, chunk_size))
        for chunk in it:
            pending.append(pool.submit(_work, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        procs = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # an interrupted screen must not wait for the chunks in flight
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)


def iter_screen(predictor, items: Iterable, *, workers: int = 0, batch_size: int = 64) -> Iterator[dict]:
    """:meth:`Predictor.screen`: one result row (a dict of :data:`SCREEN_COLUMNS`) per item, in order."""
    records = records_from_items(items)
    path = predictor.path if workers > 0 else None
    dev = str(predictor.device) if workers > 0 else None
    for rows in iter_local(records, predictor, model_path=path, device=dev, workers=workers, batch_size=batch_size):
        for row in rows:
            row.pop("_key", None)
            yield row


# ----------------------------------------------------------------------------- output


def to_csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


class PartWriter:
    """Commit rows to ``<out>.parts/`` in whole part files and merge them into ``<out>`` at the end.

    A part is written to ``part-NNNNNN.<ext>.tmp`` and renamed, so after any kill the folder
    holds only whole parts (and perhaps a ``.tmp`` file, removed on the next start). A lock on
    ``<out>.parts/.lock`` keeps two screens from writing the same output.
    """

    def __init__(self, out: str | Path, fingerprint: dict, part_rows: int = 5000, part_seconds: float = 60.0,
                 overwrite: bool = False):  # fmt: skip
        self.out = Path(out)
        self.fmt = "csv" if self.out.name.lower().endswith(".csv") else "parquet"
        if self.fmt == "parquet":
            _need_pyarrow("writing Parquet (or use --out results.csv)")
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.fingerprint = fingerprint
        self.part_rows, self.part_seconds = max(1, part_rows), part_seconds
        self.buffer: list[dict] = []
        self.last_flush = time.monotonic()
        self.written = 0
        self._lock = None
        self._start(overwrite)

    def _start(self, overwrite: bool) -> None:
        if overwrite:
            import shutil

            if self.parts.exists():
                shutil.rmtree(self.parts)
            if self.out.exists():
                self.out.unlink()
        elif self.out.exists() and not self.parts.exists():
            raise ScreenError(f"{self.out} already exists (a finished screen); add --overwrite to replace it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.parts.mkdir(exist_ok=True)
        self._lock = open(self.parts / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ScreenError(f"another screen is writing {self.out} right now; wait for it or use another --out") from None
        manifest = self.parts / "manifest.json"
        if manifest.is_file():
            old = json.loads(manifest.read_text())
            if old != self.fingerprint:
                raise ScreenError(
                    f"{self.parts} was written for other input, model or format; re-run with the same INPUT, "
                    "--model and --out to resume, or add --overwrite to start again"
                )
        else:
            tmp = manifest.with_name("manifest.json.tmp")
            tmp.write_text(json.dumps(self.fingerprint, indent=1))
            os.replace(tmp, manifest)
        for t in self.parts.glob("*.tmp"):
            t.unlink()

    def part_files(self) -> list[Path]:
        """Committed parts, in the order they were written."""
        return sorted(self.parts.glob(f"part-*.{self.fmt}"))

    def done_keys(self) -> np.ndarray:
        """Sorted keys of the records already written (to skip on a resumed run)."""
        keys = [self._read_keys(p) for p in self.part_files()]
        return np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)

    def _read_keys(self, part: Path) -> np.ndarray:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(part, columns=["_key"]).column("_key").to_numpy().astype(np.int64)
        with open(part, newline="", encoding="utf-8") as fh:
            return np.array([int(r["_key"]) for r in csv.DictReader(fh)], dtype=np.int64)

    def add(self, rows: list[dict]) -> None:
        """Buffer rows; commit a part when ``part_rows`` are waiting or ``part_seconds`` have passed."""
        self.buffer.extend(rows)
        if len(self.buffer) >= self.part_rows or time.monotonic() - self.last_flush >= self.part_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered rows as one part (nothing when the buffer is empty)."""
        if not self.buffer:
            return
        n = len(self.part_files())
        final = self.parts / f"part-{n:06d}.{self.fmt}"
        while final.exists():
            n += 1
            final = self.parts / f"part-{n:06d}.{self.fmt}"
        tmp = final.with_name(final.name + ".tmp")
        self._write(tmp, self.buffer, with_key=True)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self.written += len(self.buffer)
        self.buffer = []
        self.last_flush = time.monotonic()

    def _schema(self, with_key: bool):
        import pyarrow as pa

        cols = SCREEN_COLUMNS + (("_key",) if with_key else ())
        return pa.schema([(c, getattr(pa, COLUMN_TYPES[c] + ("_" if COLUMN_TYPES[c] == "bool" else ""))()) for c in cols])

    def _write(self, path: Path, rows: list[dict], with_key: bool) -> None:
        cols = SCREEN_COLUMNS + (("_key",) if with_key else ())
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows], schema=self._schema(with_key))
            pq.write_table(table, path)
        else:
            with open(path, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(cols)
                for r in rows:
                    w.writerow([to_csv_value(r.get(c)) for c in cols])

    def merge(self) -> dict:
        """Merge the parts into ``<out>`` (atomically), remove them; returns counts for the summary."""
        self.flush()
        parts = self.part_files()
        keys = [self._read_keys(p) for p in parts]
        all_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
        _, first = np.unique(all_keys, return_index=True)
        keep = np.zeros(len(all_keys), dtype=bool)
        keep[first] = True  # a key written twice (it should not happen) keeps its first row
        tmp = self.out.with_name(self.out.name + ".tmp")
        rows_out, offset = 0, 0
        id_hashes: list[np.ndarray] = []  # 8 bytes a row, to count ids that occur in more than one record
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            writer = pq.ParquetWriter(tmp, self._schema(False))
            for part, k in zip(parts, keys, strict=True):
                mask = keep[offset : offset + len(k)]
                offset += len(k)
                table = pq.read_table(part).select(list(SCREEN_COLUMNS)).filter(mask)
                writer.write_table(table)
                rows_out += table.num_rows
                id_hashes.append(np.array([hash(x) for x in table.column("id").to_pylist()], dtype=np.int64))
            writer.close()
        else:
            with open(tmp, "w", newline="", encoding="utf-8") as out:
                w = csv.writer(out, lineterminator="\n")
                w.writerow(SCREEN_COLUMNS)
                for part, k in zip(parts, keys, strict=True):
                    mask = keep[offset : offset + len(k)]
                    offset += len(k)
                    hashes = []
                    with open(part, newline="", encoding="utf-8") as fh:
                        for r, m in zip(csv.DictReader(fh), mask, strict=True):
                            if m:
                                w.writerow([r[c] for c in SCREEN_COLUMNS])
                                rows_out += 1
                                hashes.append(hash(r["id"]))
                    id_hashes.append(np.array(hashes, dtype=np.int64))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.out)
        import shutil

        self.close()
        shutil.rmtree(self.parts, ignore_errors=True)
        counts = np.unique(np.concatenate(id_hashes), return_counts=True)[1] if id_hashes else np.zeros(0)
        return {"rows": rows_out, "repeated_ids": int((counts > 1).sum())}

    def close(self) -> None:
        """Release the lock (the parts stay for a resume)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


# ----------------------------------------------------------------------------- the summary


def reason_category(message: str) -> str:
    """Group similar one-line errors (atom indices and distances differ) for the summary."""
    for key, reason in (
        ("partial occupanc", "partial occupancies / disorder"),
        ("apart (minimum", "atoms closer than 0.5 Å"),
        ("atoms per cell", "too many atoms"),
        ("could not read", "unparseable structure"),
        ("no structure", "empty record"),
        ("file is empty", "empty record"),
        ("not valid JSON", "line is not JSON"),
        ("dummy species", "unknown or dummy species"),
        ("molecule", "no lattice (a molecule)"),
        ("file not found", "file not found"),
        ("could not featurise", "featurisation failed"),
        ("prediction failed", "prediction failed"),
    ):
        if key in message:
            return reason
    return message.split(";")[0][:80]


@dataclass
class ScreenSummary:
    """What a screen did: counts, failures by reason, time and rate."""

    out: str
    engine: str
    total: int | None = None  # records in the input (None: not counted)
    skipped_done: int = 0  # written by an earlier, interrupted run
    predicted: int = 0
    failed: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    startup_s: float | None = None  # from the start to the first rows (worker start-up, model loading)
    rows_in_output: int | None = None
    repeated_ids: int = 0
    interrupted: bool = False

    @property
    def processed(self) -> int:
        """Records handled by this run."""
        return self.predicted + sum(self.failed.values())

    @property
    def rate(self) -> float:
        """Crystals per second in this run."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float | None:
        """Crystals per second after the first rows arrived (start-up left out)."""
        if self.startup_s is None or self.seconds - self.startup_s <= 0 or self._first_rows >= self.processed:
            return None
        return (self.processed - self._first_rows) / (self.seconds - self.startup_s)

    _first_rows: int = 0

    def add(self, rows: list[dict], elapsed: float | None = None) -> None:
        """Count a batch of result rows (``elapsed``: seconds since the start, to note the start-up)."""
        if self.startup_s is None and elapsed is not None:
            self.startup_s, self._first_rows = elapsed, len(rows)
        for r in rows:
            if r.get("error"):
                self.failed[reason_category(r["error"])] += 1
            else:
                self.predicted += 1

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"out": self.out, "engine": self.engine, "total": self.total, "skipped_done": self.skipped_done,
                "predicted": self.predicted, "failed": dict(self.failed), "seconds": round(self.seconds, 3),
                "crystals_per_s": round(self.rate, 3), "startup_s": self.startup_s,
                "steady_crystals_per_s": None if self.steady_rate is None else round(self.steady_rate, 3),
                "rows_in_output": self.rows_in_output,
                "repeated_ids": self.repeated_ids, "interrupted": self.interrupted}  # fmt: skip

    def __str__(self) -> str:
        n_failed = sum(self.failed.values())
        lines = [f"screened {self.processed:,} crystals in {self.seconds:.1f} s ({self.rate:.1f} crystals/s, "
                 f"{self.engine}): {self.predicted:,} predicted, {n_failed:,} failed"]  # fmt: skip
        if self.steady_rate is not None:
            lines.append(f"  {self.steady_rate:.1f} crystals/s after a start-up of {self.startup_s:.1f} s")
        if self.skipped_done:
            lines.append(f"  {self.skipped_done:,} already written by an earlier run were skipped")
        lines += [f"  failed {n:,}: {reason}" for reason, n in self.failed.most_common()]
        if self.repeated_ids:
            lines.append(f"  {self.repeated_ids:,} ids occur in more than one record (see the source and row columns)")
        if self.interrupted:
            lines.append(f"  interrupted: the rows so far are safe in {self.out}.parts/; re-run the same command to resume")
        elif self.rows_in_output is not None:
            lines.append(f"  wrote {self.rows_in_output:,} rows to {self.out}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- sen screen


def resolve_engine(engine: str, address: str | None) -> str:
    """``local`` or ``ray``: ``auto`` picks Ray when it is installed and a cluster address is given."""
    if engine != "auto":
        return engine
    if address or os.environ.get("RAY_ADDRESS"):
        try:
            import ray  # noqa: F401

            return "ray"
        except ImportError:
            return "local"
    return "local"


def screen(
    inputs: Iterable[str | Path],
    out: str | Path,
    *,
    model: str | Path = "sen_mp",
    device: str | None = None,
    engine: str = "auto",
    workers: int | None = None,
    address: str | None = None,
    actors: int | None = None,
    chunk_size: int = 32,
    batch_size: int = 64,
    part_rows: int = 5000,
    part_seconds: float = 60.0,
    overwrite: bool = False,
    progress: bool = True,
    log=None,
) -> ScreenSummary:
    """Predict for every record of ``inputs`` into ``out`` (``.parquet`` or ``.csv``); resumable.

    Re-running after an interruption skips the records already committed; the end result has one
    row per input record. ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM in the CLI) commits the rows
    received so far and is raised again.
    """
    from sen.predict import Predictor

    log = log or (lambda msg: print(msg, file=sys.stderr))
    engine = resolve_engine(engine, address)
    if engine not in ("local", "ray"):
        raise ScreenError(f"unknown engine {engine!r}; use local or ray")
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ScreenError(f"--engine ray needs Ray: {INSTALL_HINT}") from None
    sources = open_sources(inputs)
    predictor = Predictor.load(model, device=device)
    version = model_version(predictor)
    fingerprint = {"inputs": [s.fingerprint() for s in sources], "model": predictor.name, "model_version": version,
                   "format": "csv" if str(out).lower().endswith(".csv") else "parquet"}  # fmt: skip
    writer = PartWriter(out, fingerprint, part_rows, part_seconds, overwrite)
    summary = ScreenSummary(str(out), engine)
    try:
        done = writer.done_keys()
        summary.skipped_done = len(done)
        if len(done):
            log(f"resuming: {len(done):,} records already in {writer.parts}/ are skipped")
        if progress:
            counts = [s.count() for s in sources]
            summary.total = sum(counts) if None not in counts else None
        t0 = time.perf_counter()
        batches = _engine_batches(engine, sources, done, predictor, version, summary, device=device, workers=workers,
                                  address=address, actors=actors, chunk_size=chunk_size, batch_size=batch_size)  # fmt: skip
        _consume(batches, writer, summary, t0, progress, log)
        merged = writer.merge()
        summary.rows_in_output, summary.repeated_ids = merged["rows"], merged["repeated_ids"]
    finally:
        writer.close()
    log(str(summary))
    return summary


def _engine_batches(engine, sources, done, predictor, version, summary, *, device, workers, address, actors,
                    chunk_size, batch_size) -> Iterator[list[dict]]:  # fmt: skip
    """The lists of result rows the chosen engine produces (and its name in the summary)."""
    if engine == "local":
        n = default_workers() if workers is None else workers
        summary.engine = f"local, {n} worker{'s' if n != 1 else ''}" if n else "local, in-process"
        return iter_local(iter_records(sources, done), predictor, model_path=predictor.path, device=device,
                          workers=n, chunk_size=chunk_size, batch_size=batch_size)  # fmt: skip
    from sen.screen_ray import iter_ray

    summary.engine = "ray"
    return iter_ray(sources, done, predictor, version, address=address, num_cpus=workers, actors=actors,
                    device=device, batch_size=batch_size, chunk_size=chunk_size)  # fmt: skip


def _consume(batches, writer: PartWriter, summary: ScreenSummary, t0: float, progress: bool, log) -> None:
    """Commit every batch of rows with a progress bar (rate, ETA); on Ctrl-C commit what came and re-raise."""
    from tqdm.auto import tqdm

    bar = tqdm(total=summary.total, initial=summary.skipped_done, unit="crystal", desc="screening",
               disable=not progress, file=sys.stderr, dynamic_ncols=True, smoothing=0.05)  # fmt: skip
    try:
        for rows in batches:
            writer.add(rows)
            summary.add(rows, time.perf_counter() - t0)
            bar.update(len(rows))
    except KeyboardInterrupt:
        summary.interrupted = True
        writer.flush()
        summary.seconds = time.perf_counter() - t0
        bar.close()
        log(str(summary))
        raise
    finally:
        close = getattr(batches, "close", None)
        if close:
            close()
    bar.close()
    summary.seconds = time.perf_counter() - t0
