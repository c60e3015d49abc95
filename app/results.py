"""What the app computes for a crystal, cached: reading, prediction + routing, symmetry, downloads.

Everything here calls ``sen``; nothing draws. The model is loaded once per server
(``st.cache_resource``); per-crystal results are cached (``st.cache_data``) by the SHA-256
of the file's bytes plus the settings that change them.

Nothing computed for a crystal raises out of here unannounced: a failure is logged once on
the server (with its traceback), cached like a result (so a file that exhausts memory is not
tried again on every rerun) and comes back as :class:`sen.StructureError` (the file is at
fault, sen's own reason) or :class:`ComputeError` (anything else, a one-line reason in the
user's terms).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import spglib
import streamlit as st
import torch
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter

from sen.errors import StructureError, first_line
from sen.io import read_structure
from sen.io_guard import ReaderFailed, WorkerLimit, fork_available, run_isolated
from sen.model import TARGET_TITLES, TARGET_UNITS
from sen.predict import Predictor
from sen.screen import COLUMN_TYPES, PREDICTION_COLUMNS, SCREEN_COLUMNS, Record, Runner, empty_row, to_csv_value
from sen.symmetry import (
    DEFAULT_ANGLE_TOLERANCE,
    DEFAULT_SYMPREC,
    SymmetryReport,
    analyze_symmetry,
    unique_orbit_names,
)

#: Units of the predicted properties, for labels and downloads (the only place the app names them).
UNITS = TARGET_UNITS  # defined once, in sen.model
TITLES = TARGET_TITLES

#: Threads torch uses for the server's predictions (env SEN_THREADS; "auto": torch's default).
THREADS_ENV = "SEN_THREADS"
DEFAULT_THREADS = 1

log = logging.getLogger("sen_app")


class ComputeError(Exception):
    """A step failed for a reason other than a bad file; the message is one line for the user."""


class _Retryable(ComputeError):
    """A time limit stopped the work: said to the user, but not cached (the server may just be busy)."""


class SessionEnded(Exception):  # noqa: N818 - not an error: the visitor left
    """The visitor's session ended while its prediction ran; the worker was stopped and nothing is cached."""


@dataclass(frozen=True)
class Outcome:
    """A cached result or the reason it could not be computed (failures are cached too)."""

    value: object = None
    error: str | None = None
    bad_file: bool = False  # the error is sen's StructureError reason

    def get(self):
        """The value, or raise StructureError / ComputeError with the reason."""
        if self.error is None:
            return self.value
        raise StructureError(self.error) if self.bad_file else ComputeError(self.error)


def failure_reason(step: str, exc: BaseException) -> str:
    """What went wrong in ``step`` (e.g. "the prediction"), in one line, in the user's terms."""
    if isinstance(exc, MemoryError):
        return f"{step} needs more memory than this server has; is the cell unusually large or sparse?"
    if type(exc).__name__ == "SymmetryUndeterminedError" or isinstance(exc, spglib.SpglibError):
        return f"spglib could not determine the symmetry for {step}; try another symmetry tolerance"
    if isinstance(exc, RecursionError):
        return f"{step} is too deeply nested to compute for this crystal"
    return f"{step} failed with an unexpected error ({type(exc).__name__}); it has been logged on the server"


def _attempt(step: str, name: str, compute: Callable[[], object]) -> Outcome:
    """Run ``compute``; a failure becomes an Outcome with its reason (and a log entry)."""
    try:
        return Outcome(compute())
    except StructureError as exc:
        return Outcome(error=str(exc), bad_file=True)
    except (_Retryable, SessionEnded):
        raise  # not cached
    except ComputeError as exc:  # already in the user's terms
        return Outcome(error=str(exc))
    except Exception as exc:  # everything else: logged here, one line for the user
        log.exception("%s failed for %s", step, name)
        return Outcome(error=failure_reason(step, exc))


@dataclass(frozen=True)
class CrystalFile:
    """The bytes of one structure file, from the gallery or an upload."""

    name: str  # file name as the user knows it
    data: bytes = field(repr=False)
    origin: str = "upload"  # "example", "library" or "upload"
    title: str = ""  # display name (gallery name, else the file name)
    source: str = ""  # where the structure comes from (gallery crystals)
    digest: str = ""  # SHA-256 of data; filled in by from_bytes

    @classmethod
    def from_bytes(cls, name: str, data: bytes, origin: str = "upload", title: str = "", source: str = ""):
        """A CrystalFile with its content hash (the cache key of everything computed from it)."""
        data = bytes(data)
        return cls(name, data, origin, title or name, source, hashlib.sha256(data).hexdigest())

    @classmethod
    def from_path(cls, path: Path, origin: str = "example", title: str = "", source: str = ""):
        """Read a file from disk (gallery crystals)."""
        return cls.from_bytes(Path(path).name, Path(path).read_bytes(), origin, title, source)


# ---------------------------------------------------------------------------- model


def server_threads() -> int | None:
    """Torch threads for this server from SEN_THREADS (default 1; "auto" or 0: torch's own choice).

    One thread is the default: the server runs every visitor's script in its own thread and the
    same CPUs render pages, so torch's default (one thread per core) made predictions 2-3x slower.
    """
    value = os.environ.get(THREADS_ENV, "").strip().lower()
    if not value:
        return DEFAULT_THREADS
    if value in ("auto", "0"):
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        log.warning("%s=%r is not a number of threads; using %d", THREADS_ENV, value, DEFAULT_THREADS)
        return DEFAULT_THREADS
    return threads


@st.cache_resource(show_spinner="Loading the SEN model ...")
def load_predictor() -> Predictor:
    """The shipped SEN model, loaded once per server process (with the server's torch threads)."""
    threads = server_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    log.info("SEN model loading; torch uses %d threads", torch.get_num_threads())
    return Predictor.load()


def get_predictor() -> tuple[Predictor | None, str | None]:
    """The predictor, or None and a one-line reason (the rest of the page works without it)."""
    try:
        return load_predictor(), None
    except FileNotFoundError as exc:
        return None, str(exc)
    except Exception as exc:  # a damaged weights file must not take the page down
        return None, f"could not load the SEN model: {type(exc).__name__}: {first_line(exc)}"


def model_key(predictor: Predictor | None) -> str:
    """Part of the cache key that changes when other weights are loaded."""
    if predictor is None or predictor.path is None:
        return "none"
    path = Path(predictor.path)
    stat = path.stat() if path.is_file() else None
    return f"{path}:{stat.st_mtime_ns if stat else 0}"


# ---------------------------------------------------------------------------- reading


@st.cache_data(max_entries=512, show_spinner=False)
def _read_cached(digest: str, name: str, _data: bytes) -> Outcome:
    return _attempt("reading the file", name, lambda: _plain(read_structure(_data, filename=name)))


def _plain(structure: Structure) -> Structure:
    """The structure without site or structure properties: the app uses only lattice, species and
    positions, and a property (a pymatgen JSON can decode one into e.g. an open file) may not pickle,
    which the result cache needs."""
    return Structure(structure.lattice, structure.species, structure.frac_coords)


def read_crystal(crystal: CrystalFile) -> Structure:
    """The validated structure of a file; raises :class:`StructureError` with sen.io's reason,
    or :class:`ComputeError` when reading failed otherwise."""
    return _read_cached(crystal.digest, crystal.name, crystal.data).get()


# ---------------------------------------------------------------------------- prediction


#: Limits of one crystal's prediction + explanation in its worker process (see :func:`bounded_explain`).
EXPLAIN_TIME_LIMIT = 30.0  # seconds of wall-clock time
EXPLAIN_MEMORY_LIMIT = 2 * 1024**3  # bytes of memory beyond what the server process holds
#: Prediction workers at once over all sessions (the others wait their turn): at most this many times
#: EXPLAIN_MEMORY_LIMIT above the server, however many visitors upload at the same moment.
MAX_WORKERS = max(2, min(4, os.cpu_count() or 2))
_WORKERS = threading.BoundedSemaphore(MAX_WORKERS)


def isolate_predictions(predictor: Predictor) -> bool:
    """Whether predictions run in a forked worker: on CPU where the OS can fork (CUDA does not survive a
    fork), unless ``SEN_ISOLATE=0``."""
    return fork_available() and predictor.device.type == "cpu" and os.environ.get("SEN_ISOLATE", "1") != "0"


def _session_gone() -> Callable[[], bool] | None:
    """A check that says True once the visitor whose script runs this has left (None outside a server)."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx(suppress_warning=True)
        if ctx is None or not Runtime.exists():
            return None
        runtime, session = Runtime.instance(), ctx.session_id
        return lambda: not runtime.is_active_session(session)
    except Exception:  # an internal Streamlit API moved: run without the check
        log.warning("cannot watch the session while predicting", exc_info=True)
        return None


def bounded_explain(predictor: Predictor, structure: Structure, isolate: bool = True) -> dict:
    """``predictor.explain(structure)`` in a forked worker that is killed after :data:`EXPLAIN_TIME_LIMIT`,
    when it needs more than :data:`EXPLAIN_MEMORY_LIMIT`, or when the visitor leaves (:class:`SessionEnded`).

    The checks of ``sen.io`` already bound a valid crystal's work (atoms, cell, neighbours); the worker is
    the second line: nothing a crystal does can hold the server, its memory or other visitors' pages.
    ``isolate=False`` (the app's own crystals: the gallery and the library, and changes of them made with
    the teaching controls, all bounded) runs it in the server process and saves the worker's start.
    """
    return bounded(predictor, predictor.explain, (structure,), "the prediction", isolate)


def bounded(predictor: Predictor, func: Callable, args: tuple, step: str, isolate: bool = True):
    """``func(*args)`` (a prediction with ``predictor``) in a worker with the limits of :func:`bounded_explain`;
    in the process itself when not ``isolate`` or where :func:`isolate_predictions` says no. ``step`` names
    it in messages."""
    if not (isolate and isolate_predictions(predictor)):
        return func(*args)
    should_stop = _session_gone()
    while not _WORKERS.acquire(timeout=0.1):  # at most MAX_WORKERS at once: bounded memory and CPU in all
        if should_stop is not None and should_stop():
            raise SessionEnded()
    try:
        return run_isolated(func, args, time_limit=EXPLAIN_TIME_LIMIT, memory_limit=EXPLAIN_MEMORY_LIMIT,
                            should_stop=should_stop, log_exceptions=True)  # fmt: skip
    except WorkerLimit as exc:
        if exc.kind == "stopped":
            raise SessionEnded() from None
        if exc.kind in ("time", "cpu"):
            raise _Retryable(
                f"{step} took longer than {EXPLAIN_TIME_LIMIT:g} s, so it was stopped; "
                "the server may be busy (try again) or the cell is unusually large or dense"
            ) from None
        if exc.kind == "recursion":
            raise ComputeError(f"{step} is too deeply nested to compute for this crystal") from None
        raise ComputeError(
            f"{step} needed more than {EXPLAIN_MEMORY_LIMIT / 1024**3:g} GB of memory, so it was stopped; "
            "is the cell unusually large or sparse?"
        ) from None
    except ReaderFailed as exc:
        log.error("%s failed in its worker with %s:\n%s", step, exc.args[0], exc.args[1] if len(exc.args) > 1 else "")
        raise ComputeError(
            f"{step} failed with an unexpected error ({exc.args[0]}); it has been logged on the server"
        ) from None
    finally:
        _WORKERS.release()


#: Where a crystal comes from when it is the app's own (shipped with it, or a teaching change of one).
TRUSTED_ORIGINS = ("example", "library")


@st.cache_data(max_entries=256, show_spinner=False)
def _explain_cached(digest: str, name: str, model: str, isolate: bool, _data: bytes, _predictor: Predictor) -> Outcome:
    read = _read_cached(digest, name, _data)
    if read.error is not None:
        return read
    return _attempt("the prediction", name, lambda: bounded_explain(_predictor, read.value, isolate))


def explain_crystal(crystal: CrystalFile, predictor: Predictor) -> dict:
    """``Predictor.explain`` for a file (prediction, symmetry given to SEN, routing matrices), run by
    :func:`bounded_explain`; raises StructureError or ComputeError (SessionEnded when the visitor left)."""
    isolate = crystal.origin not in TRUSTED_ORIGINS  # an upload, or a change of one
    return _explain_cached(crystal.digest, crystal.name, model_key(predictor), isolate, crystal.data, predictor).get()


def model_test_mae(card: dict, target: str) -> float | None:
    """The model's measured test MAE for ``target`` (from metrics.json), if recorded."""
    value = ((card.get("targets") or {}).get(target) or {}).get("test_mae")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def spread_warning(card: dict, target: str, prediction: dict, n_members: int) -> str | None:
    """A note when an ensemble's networks disagree on ``target`` more than on 90 % of the test
    crystals (threshold and the errors seen there come from metrics.json), else ``None``."""
    spread = ((card.get("targets") or {}).get(target) or {}).get("spread") or {}
    std = prediction.get(f"{target}_std")
    try:
        threshold, above, below = (float(spread[k]) for k in ("high_spread_threshold", "mae_above_threshold",
                                                              "mae_below_threshold"))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
    if std is None or not float(std) > threshold:
        return None
    unit = UNITS.get(target, "")
    quantile = float(spread.get("high_spread_quantile", 0.9))
    return (
        f"The {n_members} networks disagree on the {TITLES.get(target, target).lower()} of this crystal "
        f"(spread ± {float(std):.3f} {unit}, more than for {quantile:.0%} of the test crystals). On the test "
        f"crystals with this much disagreement the mean error was {above:.3f} {unit}, against {below:.3f} {unit} "
        "for the rest: treat this number with care."
    )


def coverage_warnings(structure: Structure, card: dict) -> list[str]:
    """Ways in which this crystal lies outside what the model saw in training (empty if none known)."""
    notes = []
    trained = card.get("training_elements")
    if isinstance(trained, list) and trained:
        missing = sorted({el.symbol for el in structure.composition.elements} - {str(e) for e in trained})
        if missing:
            notes.append(
                f"{', '.join(missing)} never appeared in the training data, so the network has no experience "
                "with this chemistry: read the prediction as a guess."
            )
    max_atoms = card.get("max_atoms_in_training")
    if isinstance(max_atoms, int) and len(structure) > max_atoms:
        notes.append(
            f"This cell has {len(structure)} atoms, more than any training crystal ({max_atoms}): "
            "the prediction is an extrapolation."
        )
    return notes


def record_key(target: str, kind: str = "") -> str:
    """Key of a prediction record, with the unit: ``band_gap_eV``, ``band_gap_std_eV``, ..."""
    unit = UNITS.get(target, "")
    return f"{target}{kind}" + ("_" + unit.replace("/", "_per_") if unit else "")


def prediction_record(crystal: CrystalFile, structure: Structure, prediction: dict, predictor: Predictor) -> dict:
    """One flat row describing a prediction, with units in the keys (for JSON/CSV downloads)."""
    record: dict = {
        "file": crystal.name,
        "name": crystal.title,
        "formula": structure.composition.reduced_formula,
        "n_atoms": len(structure),
        "space_group_symbol": prediction.get("space_group_symbol"),
        "space_group_number": prediction.get("space_group_number"),
    }
    for target in predictor.targets:
        record[record_key(target)] = round(float(prediction[target]), 6)
        if f"{target}_std" in prediction:  # spread over an ensemble's networks
            record[record_key(target, "_std")] = round(float(prediction[f"{target}_std"]), 6)
        record[record_key(target, "_test_mae")] = model_test_mae(predictor.card, target)
    if "metal_probability" in prediction:
        record["metal_probability"] = round(float(prediction["metal_probability"]), 6)
        record["is_metal"] = bool(prediction["is_metal"])
    record["model"] = predictor.name
    record["sha256"] = crystal.digest
    return record


def records_csv(records: Sequence[dict]) -> str:
    """CSV text of prediction records (columns: union of keys, in first-seen order)."""
    columns: list[str] = []
    for record in records:
        columns.extend(k for k in record if k not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


# ---------------------------------------------------------------------------- symmetry


@dataclass(frozen=True)
class SymmetryView:
    """Symmetry at the user's tolerance, with the lattice parameters and the standardised cell."""

    report: SymmetryReport
    lattice_rows: list[dict]  # per cell (as given; standard): a, b, c (Å), angles (°), volume (Å³), atoms
    standard_cell: Structure | None  # conventional standard cell (spglib's setting); None if it failed
    standard_error: str | None = None  # why there is no standard cell (one line), else None

    @property
    def standard_cif(self) -> str | None:
        """The standard cell as CIF text with its space-group operations, written when asked for (the
        download button calls it on a click): symmetrised writing costs more than the rest of the panel."""
        if self.standard_cell is None:
            return None
        return standard_cif(self.standard_cell, self.report.symprec, self.report.angle_tolerance)


STANDARD_CELL = "conventional standard cell"


@st.cache_data(max_entries=256, show_spinner=False)
def _symmetry_cached(digest: str, name: str, symprec: float, angle_tolerance: float, _data: bytes) -> Outcome:
    read = _read_cached(digest, name, _data)
    if read.error is not None:
        return read
    structure = read.value
    analysis = _attempt("the symmetry analysis", name, lambda: analyze_symmetry(structure, symprec, angle_tolerance))
    if analysis.error is not None:
        return analysis
    rows = [_lattice_row("cell as given", structure)]
    standard = _attempt(
        "the conventional standard cell", name, lambda: spglib_standard_cell(structure, symprec, angle_tolerance)
    )
    if standard.error is not None:
        return Outcome(SymmetryView(analysis.value, rows, None, standard.error))
    cell = standard.value
    return Outcome(SymmetryView(analysis.value, [*rows, _lattice_row(STANDARD_CELL, cell)], cell))


def symmetry_view(crystal: CrystalFile, symprec: float, angle_tolerance: float) -> SymmetryView:
    """spglib analysis at ``symprec`` (Å) and ``angle_tolerance`` (°); raises StructureError or
    ComputeError (a failing standard cell only empties ``standard_cif`` and sets ``standard_error``)."""
    return _symmetry_cached(crystal.digest, crystal.name, float(symprec), float(angle_tolerance), crystal.data).get()


def spglib_standard_cell(
    structure: Structure, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE
) -> Structure:
    """The conventional cell in spglib's standard setting: the setting the Wyckoff letters refer to
    and the symmetrised CIF is written in (LiFePO4 in Pnma: a = 10.33, b = 6.01, c = 4.69 Å).

    pymatgen's conventional_standard_structure (sen.symmetry) re-orders orthorhombic axes so that
    a < b < c, which is another setting of the same space group: its letters would not match.
    """
    cell = (structure.lattice.matrix, structure.frac_coords, list(structure.atomic_numbers))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        standard = spglib.standardize_cell(cell, to_primitive=False, symprec=symprec, angle_tolerance=angle_tolerance)
    if standard is None:
        raise StructureError(f"spglib could not standardise this cell at tolerance {symprec:g} Å")
    lattice, positions, numbers = standard
    return Structure(lattice, [int(z) for z in numbers], positions)


#: Rows of the lattice table (parameter name, key in a lattice row).
LATTICE_PARAMETERS = ("a (Å)", "b (Å)", "c (Å)", "α (°)", "β (°)", "γ (°)", "volume (Å³)", "atoms")


def _lattice_row(cell: str, structure: Structure) -> dict:
    lat = structure.lattice
    return {
        "cell": cell,
        "atoms": len(structure),
        "a (Å)": f"{lat.a:.4f}",
        "b (Å)": f"{lat.b:.4f}",
        "c (Å)": f"{lat.c:.4f}",
        "α (°)": f"{lat.alpha:.2f}",
        "β (°)": f"{lat.beta:.2f}",
        "γ (°)": f"{lat.gamma:.2f}",
        "volume (Å³)": f"{lat.volume:.2f}",
    }


def lattice_table(rows: Sequence[dict]) -> list[dict]:
    """The lattice rows transposed (one row per parameter, one column per cell): three narrow
    columns fit the half-width symmetry column where nine did not."""
    return [{"parameter": p, **{row["cell"]: str(row[p]) for row in rows}} for p in LATTICE_PARAMETERS]


def standard_cif(
    conventional: Structure, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE
) -> str:
    """CIF text of a conventional standard cell, written with its space-group operations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return str(CifWriter(conventional, symprec=symprec, angle_tolerance=angle_tolerance))
        except Exception:  # symmetrised writing can fail at odd tolerances; P1 is still correct
            return str(CifWriter(conventional))


def orbit_table(report: SymmetryReport) -> list[dict]:
    """One row per Wyckoff orbit for the symmetry panel, named as in the charts (``O 4c (1)``)."""
    return [
        {
            "orbit": name,
            "element": orbit.element,
            "Wyckoff letter": orbit.wyckoff_letter,
            "multiplicity": orbit.multiplicity,
            "site symmetry": orbit.site_symmetry,
            "atoms": ", ".join(str(i) for i in orbit.atom_indices),
        }
        for orbit, name in zip(report.orbits, unique_orbit_names(report), strict=True)
    ]


# ---------------------------------------------------------------------------- routing data


def routing_data(structure: Structure, explanation: dict, targets: Sequence[str]) -> dict:
    """The routing matrices of one crystal, labelled, as plain JSON-able Python."""
    report: SymmetryReport = explanation["symmetry"]
    names = unique_orbit_names(report)
    routing = np.asarray(explanation["routing"])
    contributions = np.asarray(explanation["atom_contributions"])
    orbit_index = np.asarray(explanation["orbit_index"])
    return {
        "formula": structure.composition.reduced_formula,
        "space_group": f"{report.space_group_symbol} ({report.space_group_number})",
        "symprec_angstrom": report.symprec,
        "n_capsules": int(routing.shape[1]),
        "atoms": [
            {
                "index": i,
                "element": site.specie.symbol,
                "orbit": names[int(orbit_index[i])],
                "dominant_capsule": int(explanation["dominant_capsule"][i]),
                "routing": _floats(routing[i]),
                "contribution": {t: float(contributions[i, k]) for k, t in enumerate(targets)},
            }
            for i, site in enumerate(structure)
        ],
        "orbits": [
            {"orbit": names[k], "atoms": list(orbit.atom_indices), "routing": _floats(explanation["orbit_routing"][k])}
            for k, orbit in enumerate(report.orbits)
        ],
        "capsule_attention": [_floats(row) for row in explanation["capsule_attention"]],
        "capsule_activation": _floats(explanation["capsule_activation"]),
        "output_routing": {t: _floats(explanation["output_routing"][k]) for k, t in enumerate(targets)},
        "routing_spread": float(explanation["routing_spread"]),
        "orbit_capsule_mutual_information_bits": float(explanation["orbit_capsule_mutual_information"]),
        "orbit_entropy_bits": float(explanation["orbit_entropy"]),
    }


def routing_csv(data: dict) -> str:
    """Atoms x capsules routing as CSV (one row per atom, with its orbit and dominant capsule)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["atom", "element", "orbit", "dominant_capsule"] + [f"capsule_{k}" for k in range(data["n_capsules"])]
    )
    for atom in data["atoms"]:
        writer.writerow([atom["index"], atom["element"], atom["orbit"], atom["dominant_capsule"], *atom["routing"]])
    return out.getvalue()


def _floats(values) -> list[float]:
    return [round(float(v), 6) for v in np.asarray(values).ravel()]


# ---------------------------------------------------------------------------- several files


#: Work one upload may cause: files predicted, and atoms over all of them (``sen screen`` has no limit).
MAX_BATCH_FILES = 50
MAX_BATCH_ATOMS = 5000
#: Work one session (a browser tab) may cause over all its uploads: distinct files predicted, and their atoms.
MAX_SESSION_FILES = 200
MAX_SESSION_ATOMS = 20_000
#: Files screened together (one forward pass, as ``sen screen`` does a chunk); the batch can stop between chunks.
BATCH_CHUNK = 8
_SESSION_WORK = "_session_work"  # session state: the SessionWork of this session


@dataclass(frozen=True)
class SkippedFile(CrystalFile):
    """A member of an uploaded archive that is not predicted (not a structure file, encrypted, ...):
    it still gets a row, with ``reason``."""

    reason: str = ""


@dataclass
class SessionWork:
    """The distinct files (by SHA-256) that this session has had predicted, with their atoms."""

    atoms: dict[str, int] = field(default_factory=dict)

    @property
    def n_files(self) -> int:
        return len(self.atoms)

    @property
    def n_atoms(self) -> int:
        return sum(self.atoms.values())

    def allows(self, digest: str, n_atoms: int) -> bool:
        """Whether predicting this file keeps the session within its limits (a file predicted before always does)."""
        if digest in self.atoms:
            return True
        return self.n_files < MAX_SESSION_FILES and self.n_atoms + n_atoms <= MAX_SESSION_ATOMS

    def add(self, digest: str, n_atoms: int) -> None:
        """Count a predicted file (once per digest)."""
        self.atoms.setdefault(digest, n_atoms)

    def limit_message(self) -> str:
        """One line for the visitor once the session's limit is reached (Markdown: no user text in it)."""
        return (
            f"This session has predicted {self.n_files} files ({self.n_atoms:,} atoms) and may predict at most "
            f"{MAX_SESSION_FILES} files and {MAX_SESSION_ATOMS:,} atoms; open a new session or use `sen screen` for more."
        )


def session_work() -> SessionWork:
    """The work this browser session has caused so far (kept in ``st.session_state``)."""
    return st.session_state.setdefault(_SESSION_WORK, SessionWork())


@dataclass
class BatchResult:
    """Predictions for an upload of several files."""

    rows: list[dict] = field(default_factory=list)  # one sen-screen row per file in, in order (the downloads)
    records: list[dict] = field(default_factory=list)  # one prediction record per predicted file (the table)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    left_out: list[str] = field(default_factory=list)  # files not predicted because a limit was reached
    limit: str = ""  # the per-upload limit reached, in words ("" if none)
    stopped: list[str] = field(default_factory=list)  # files not predicted because the session's limit was reached
    session_limit: str = ""  # the session's limit message ("" if not reached)


def predict_files(
    crystals: Sequence[CrystalFile],
    predictor: Predictor,
    on_progress: Callable[[int, int, str], None] | None = None,
    max_files: int = MAX_BATCH_FILES,
    max_atoms: int = MAX_BATCH_ATOMS,
    work: SessionWork | None = None,
) -> BatchResult:
    """``sen screen``'s rows for many files (``result.rows``, one per file, failures with their reason),
    prediction records of those predicted, the (file name, reason) of those that failed, and the files
    left out once ``max_files`` files or ``max_atoms`` atoms in all are reached, or once the session's
    ``work`` would pass its limits (the batch stops there).

    The files are screened as ``sen screen`` does (:class:`sen.screen.Runner`: featurise, then one
    forward pass per chunk of :data:`BATCH_CHUNK` files), so the numbers are the CLI's.
    ``on_progress(done, total, name)`` runs after each file. In the app it updates a progress bar,
    which is also where Streamlit stops the run when the visitor leaves or changes something (it
    raises its StopException/RerunException there), so a batch stops within one chunk.
    """
    result = BatchResult(rows=[{} for _ in crystals])
    chosen = _choose_files(crystals, predictor, result, max_files, max_atoms)
    finished, completed = 0, False
    try:
        for start in range(0, len(chosen), BATCH_CHUNK):
            part = chosen[start : start + BATCH_CHUNK]
            admitted = _admit(part, work)
            _screen_chunk(admitted, predictor, result)
            for _, crystal, _ in admitted:
                finished += 1
                if on_progress is not None:
                    on_progress(finished, len(chosen), crystal.name)
            if len(admitted) < len(part):  # the session's limit: this file and the ones after it are not predicted
                _stop(chosen[start + len(admitted) :], predictor, result, work)
                break
        completed = True
    finally:
        if not completed:  # Streamlit stopped the run (visitor gone, or a new rerun)
            log.info("batch prediction stopped after %d of %d files", finished, len(chosen))
    return result


def _stop(rest: list[tuple], predictor: Predictor, result: BatchResult, work: SessionWork | None) -> None:
    """The files in ``rest`` are not predicted: the session has reached its limit."""
    result.session_limit = work.limit_message() if work is not None else ""
    reason = f"not predicted: this session's limit ({MAX_SESSION_FILES} files, {MAX_SESSION_ATOMS:,} atoms) was reached"
    for index, crystal, _ in rest:
        result.stopped.append(crystal.name)
        result.rows[index] = _error_row(crystal, index, predictor, reason)


def _choose_files(crystals, predictor, result: BatchResult, max_files: int, max_atoms: int) -> list[tuple]:
    """(index, crystal, structure) of the files to predict, in upload order, within the upload's limits; the
    rows of the others (unreadable, skipped or left out) are filled in."""
    chosen: list[tuple[int, CrystalFile, Structure]] = []
    atoms, left_out = 0, []
    for index, crystal in enumerate(crystals):
        if isinstance(crystal, SkippedFile):
            result.failures.append((crystal.name, crystal.reason))
            result.rows[index] = _error_row(crystal, index, predictor, crystal.reason)
            continue
        if len(chosen) >= max_files or atoms >= max_atoms:
            left_out.append(index)
            continue
        try:
            structure = read_crystal(crystal)
        except (StructureError, ComputeError) as exc:
            result.failures.append((crystal.name, str(exc)))
            result.rows[index] = _error_row(crystal, index, predictor, str(exc))
            continue
        if atoms + len(structure) > max_atoms:
            left_out.append(index)
            atoms = max_atoms  # the files after this one are left out too: the table follows the upload order
            continue
        chosen.append((index, crystal, structure))
        atoms += len(structure)
    if left_out:
        result.limit = f"at most {max_files} files and {max_atoms:,} atoms in all per upload"
    for index in left_out:
        result.left_out.append(crystals[index].name)
        result.rows[index] = _error_row(crystals[index], index, predictor, f"not predicted: {result.limit}")
    return chosen


def _admit(part: list[tuple], work: SessionWork | None) -> list[tuple]:
    """The files of ``part`` that the session may still have predicted (up to the first that it may not),
    counted as predicted."""
    if work is None:
        return part
    for k, (_, crystal, structure) in enumerate(part):
        if not work.allows(crystal.digest, len(structure)):
            return part[:k]
        work.add(crystal.digest, len(structure))
    return part


def _screen_chunk(part: list[tuple], predictor: Predictor, result: BatchResult) -> None:
    """Screen ``part`` (index, crystal, structure) into ``result``: its rows, records and failures."""
    if not part:
        return
    files = tuple((crystal.digest, crystal.name) for _, crystal, _ in part)
    try:
        rows = _screen_cached(files, model_key(predictor), tuple(s for _, _, s in part), predictor)
    except ComputeError as exc:  # a limit of the worker stopped the chunk: each of its files says why
        rows = [_error_row(crystal, index, predictor, str(exc)) for index, crystal, _ in part]
    for (index, crystal, structure), row in zip(part, rows, strict=True):
        row.update(id=crystal.name, source=crystal.source or "upload", row=index)
        result.rows[index] = row
        if row.get("error"):
            result.failures.append((crystal.name, row["error"]))
        else:
            result.records.append(prediction_record(crystal, structure, _prediction_of(row), predictor))


@st.cache_data(max_entries=256, show_spinner=False)
def _screen_cached(files: tuple, model: str, _structures: tuple, _predictor: Predictor) -> list[dict]:
    """``sen screen``'s rows for a chunk of files ((digest, name) each, read into ``_structures``)."""
    records = [
        Record(i, name, "", i, s, "structure") for i, ((_, name), s) in enumerate(zip(files, _structures, strict=True))
    ]
    rows = bounded(_predictor, Runner(_predictor).process, (records,), "the batch prediction")
    for row in rows:
        row.pop("_key", None)
    return rows


def _error_row(crystal: CrystalFile, index: int, predictor: Predictor, reason: str) -> dict:
    """The row of a file that was not predicted: its id and reason, null predictions."""
    row = empty_row(Record(index, crystal.name, crystal.source or "upload", index))
    row.pop("_key", None)
    row.update(model=predictor.name, error=reason)
    return row


def _prediction_of(row: dict) -> dict:
    """A screen row as a :meth:`Predictor.predict` dict (for :func:`prediction_record`)."""
    prediction = {key: row[column] for key, column in PREDICTION_COLUMNS.items() if row.get(column) is not None}
    prediction.update(space_group_symbol=row.get("space_group"), space_group_number=row.get("space_group_number"))
    return prediction


def screen_csv(rows: Sequence[dict]) -> str:
    """CSV text of screen rows, as ``sen screen out.csv`` writes it (its columns, empty for null)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SCREEN_COLUMNS)
    writer.writerows([to_csv_value(row.get(c)) for c in SCREEN_COLUMNS] for row in rows)
    return out.getvalue()


def screen_parquet(rows: Sequence[dict]) -> bytes:
    """Parquet bytes of screen rows, with ``sen screen``'s columns and types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(c, types[COLUMN_TYPES[c]]) for c in SCREEN_COLUMNS])
    table = pa.Table.from_pylist([{c: row.get(c) for c in SCREEN_COLUMNS} for row in rows], schema=schema)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def to_json(obj: object) -> str:
    """Pretty JSON for downloads."""
    return json.dumps(obj, indent=1, ensure_ascii=False)
