"""What the app computes for a crystal, cached: reading, prediction + routing, symmetry, downloads.

Everything here calls ``sen``; nothing draws. The model is loaded once per server
(``st.cache_resource``); per-crystal results are cached (``st.cache_data``) by the SHA-256
of the file's bytes plus the settings that change them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter

from sen.errors import StructureError
from sen.io import read_structure
from sen.predict import Predictor
from sen.symmetry import (
    DEFAULT_ANGLE_TOLERANCE,
    DEFAULT_SYMPREC,
    SymmetryReport,
    analyze_symmetry,
    conventional_standard_structure,
)

#: Units of the predicted properties, for labels and downloads.
UNITS = {"band_gap": "eV", "formation_energy_per_atom": "eV/atom"}
TITLES = {"band_gap": "Band gap", "formation_energy_per_atom": "Formation energy"}


@dataclass(frozen=True)
class CrystalFile:
    """The bytes of one structure file, from the gallery or an upload."""

    name: str  # file name as the user knows it
    data: bytes = field(repr=False)
    origin: str = "upload"  # "example" or "upload"
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


@st.cache_resource(show_spinner="Loading the SEN model ...")
def load_predictor() -> Predictor:
    """The shipped SEN model, loaded once per server process."""
    return Predictor.load()


def get_predictor() -> tuple[Predictor | None, str | None]:
    """The predictor, or None and a one-line reason (the rest of the page works without it)."""
    try:
        return load_predictor(), None
    except FileNotFoundError as exc:
        return None, str(exc)
    except Exception as exc:  # a damaged weights file must not take the page down
        return None, f"could not load the SEN model: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def model_key(predictor: Predictor | None) -> str:
    """Part of the cache key that changes when other weights are loaded."""
    if predictor is None or predictor.path is None:
        return "none"
    path = Path(predictor.path)
    stat = path.stat() if path.is_file() else None
    return f"{path}:{stat.st_mtime_ns if stat else 0}"


# ---------------------------------------------------------------------------- reading


@st.cache_data(max_entries=512, show_spinner=False)
def _read_cached(digest: str, name: str, _data: bytes) -> tuple[Structure | None, str | None]:
    try:
        return read_structure(_data, filename=name), None
    except StructureError as exc:
        return None, str(exc)


def read_crystal(crystal: CrystalFile) -> Structure:
    """The validated structure of a file; raises :class:`StructureError` with sen.io's reason."""
    structure, error = _read_cached(crystal.digest, crystal.name, crystal.data)
    if error is not None:
        raise StructureError(error)
    return structure


# ---------------------------------------------------------------------------- prediction


@st.cache_data(max_entries=256, show_spinner=False)
def _explain_cached(digest: str, name: str, model: str, _data: bytes, _predictor: Predictor) -> dict:
    structure, error = _read_cached(digest, name, _data)
    if error is not None:
        raise StructureError(error)
    return _predictor.explain(structure)


def explain_crystal(crystal: CrystalFile, predictor: Predictor) -> dict:
    """``Predictor.explain`` for a file (prediction, symmetry given to SEN, routing matrices)."""
    return _explain_cached(crystal.digest, crystal.name, model_key(predictor), crystal.data, predictor)


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
        unit = UNITS.get(target, "")
        suffix = "_" + unit.replace("/", "_per_") if unit else ""
        record[f"{target}{suffix}"] = round(float(prediction[target]), 6)
        if f"{target}_std" in prediction:  # spread over an ensemble's networks
            record[f"{target}_std{suffix}"] = round(float(prediction[f"{target}_std"]), 6)
        record[f"{target}_test_mae{suffix}"] = model_test_mae(predictor.card, target)
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
    lattice_rows: list[dict]  # cell as given and conventional standard cell: a, b, c (Å), angles (°), volume (Å³)
    standard_cif: str  # conventional standard cell as CIF text (symmetrised)


@st.cache_data(max_entries=256, show_spinner=False)
def _symmetry_cached(digest: str, name: str, symprec: float, angle_tolerance: float, _data: bytes) -> SymmetryView:
    structure, error = _read_cached(digest, name, _data)
    if error is not None:
        raise StructureError(error)
    report = analyze_symmetry(structure, symprec, angle_tolerance)
    conventional = conventional_standard_structure(structure, symprec, angle_tolerance)
    return SymmetryView(
        report,
        [_lattice_row("cell as given", structure), _lattice_row("conventional standard cell", conventional)],
        standard_cif(conventional, symprec, angle_tolerance),
    )


def symmetry_view(crystal: CrystalFile, symprec: float, angle_tolerance: float) -> SymmetryView:
    """spglib analysis at ``symprec`` (Å) and ``angle_tolerance`` (°); raises StructureError."""
    return _symmetry_cached(crystal.digest, crystal.name, float(symprec), float(angle_tolerance), crystal.data)


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
    """One row per Wyckoff orbit for the symmetry panel."""
    return [
        {
            "orbit": orbit.label,
            "element": orbit.element,
            "Wyckoff letter": orbit.wyckoff_letter,
            "multiplicity": orbit.multiplicity,
            "site symmetry": orbit.site_symmetry,
            "atoms": ", ".join(str(i) for i in orbit.atom_indices),
        }
        for orbit in report.orbits
    ]


def unique_orbit_names(report: SymmetryReport) -> list[str]:
    """Orbit labels made unique (two ``O 4c`` orbits become ``O 4c (1)`` and ``O 4c (2)``)."""
    labels = [orbit.label for orbit in report.orbits]
    seen: dict[str, int] = {}
    names = []
    for label in labels:
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            names.append(f"{label} ({seen[label]})")
        else:
            names.append(label)
    return names


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


def predict_files(
    crystals: Sequence[CrystalFile],
    predictor: Predictor,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Prediction records for many files, and (file name, reason) for those that failed."""
    records, failures = [], []
    for done, crystal in enumerate(crystals, start=1):
        try:
            structure = read_crystal(crystal)
            records.append(prediction_record(crystal, structure, explain_crystal(crystal, predictor), predictor))
        except StructureError as exc:
            failures.append((crystal.name, str(exc)))
        except Exception as exc:  # one odd file must not stop the others
            failures.append((crystal.name, f"could not be analysed: {type(exc).__name__}: {_first_line(exc)}"))
        if on_progress is not None:
            on_progress(done, len(crystals), crystal.name)
    return records, failures


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def to_json(obj: object) -> str:
    """Pretty JSON for downloads."""
    return json.dumps(obj, indent=1, ensure_ascii=False)
