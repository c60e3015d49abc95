"""Read and validate crystal structures (CIF, POSCAR/CONTCAR, extended XYZ, pymatgen JSON).

Every problem a user can cause is raised as :class:`sen.errors.StructureError` with a
one-sentence message; nothing else escapes from :func:`read_structure`.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
from pymatgen.core import DummySpecies, Element, Structure

from sen.errors import StructureError

DEFAULT_MAX_ATOMS = 500
DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # 5 MB
MIN_INTERATOMIC_DISTANCE = 0.5  # Å

#: Formats we read, and the file-name patterns that select them.
FORMATS = ("cif", "poscar", "extxyz", "json")
_SUFFIX_FORMAT = {
    ".cif": "cif",
    ".mcif": "cif",
    ".vasp": "poscar",
    ".poscar": "poscar",
    ".contcar": "poscar",
    ".xyz": "extxyz",
    ".extxyz": "extxyz",
    ".json": "json",
}


def detect_format(filename: str | None, text: str) -> str:
    """Guess the file format from the file name, then from the content."""
    if filename:
        name = Path(filename).name
        upper = name.upper()
        if upper.startswith(("POSCAR", "CONTCAR")):
            return "poscar"
        suffix = Path(name.lower()).suffix
        if suffix in _SUFFIX_FORMAT:
            return _SUFFIX_FORMAT[suffix]
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "json"
    if "_cell_length_a" in text or stripped.lower().startswith("data_"):
        return "cif"
    lines = stripped.splitlines()
    if len(lines) > 1 and lines[0].strip().isdigit():
        return "extxyz"
    return "poscar"


def read_structure(
    source: str | Path | bytes,
    *,
    filename: str | None = None,
    fmt: str | None = None,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Structure:
    """Read one crystal structure from a file path, or from the bytes/text of a file.

    Args:
        source: a path (``str`` or ``Path``) to a structure file, the raw ``bytes`` of
            an uploaded file, or the file's text (a ``str`` containing a newline, or JSON text).
        filename: the original file name, used to pick the format for bytes/text.
        fmt: force a format: one of ``cif``, ``poscar``, ``extxyz``, ``json``.
        max_atoms: refuse structures with more atoms per cell than this.
        max_bytes: refuse files larger than this many bytes.

    Returns:
        A validated, ordered, periodic pymatgen ``Structure`` (positions in Å).

    Raises:
        StructureError: the file cannot be read or describes something SEN cannot handle.
    """
    data, filename = _load_bytes(source, filename, max_bytes)
    text = _decode(data, filename)
    fmt = (fmt or detect_format(filename, text)).lower()
    if fmt not in FORMATS:
        raise StructureError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    structure = _parse(text, fmt)
    validate_structure(structure, max_atoms=max_atoms)
    return structure


def _load_bytes(source: str | Path | bytes, filename: str | None, max_bytes: int) -> tuple[bytes, str | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, str) and ("\n" in source or source.lstrip().startswith(("{", "["))):
        data = source.encode("utf-8")  # file content (one-line JSON has no newline)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        try:
            found = path.is_file()
        except OSError:  # e.g. a name too long to be a path
            found = False
        if not found:
            raise StructureError(f"file not found: {str(path)[:200]}")
        size = path.stat().st_size
        if size > max_bytes:
            raise StructureError(_too_big(size, max_bytes))
        data = path.read_bytes()
        filename = filename or path.name
    else:
        raise StructureError(f"cannot read a structure from a {type(source).__name__}; pass a path, bytes or text")
    if len(data) > max_bytes:
        raise StructureError(_too_big(len(data), max_bytes))
    return data, filename


def _too_big(size: int, max_bytes: int) -> str:
    return f"file is {_file_size(size)}, over the {_file_size(max_bytes)} limit; upload a single unit cell"


def _file_size(n: int) -> str:
    """Human-readable size in binary units (the 5 MB default limit is 5 x 1024 x 1024 bytes)."""
    if n >= 100 * 1024:
        return f"{n / 1024**2:.1f} MB"
    return f"{n / 1024:.1f} kB" if n >= 1024 else f"{n} bytes"


def _decode(data: bytes, filename: str | None) -> str:
    if not data.strip():
        raise StructureError("file is empty; upload a CIF, POSCAR, extended XYZ or pymatgen JSON file")
    if b"\x00" in data:
        raise StructureError("file looks binary, not text; upload a CIF, POSCAR, extended XYZ or pymatgen JSON file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
            raise StructureError("file is not readable text; save it as UTF-8") from None


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return (msg[0] if msg else type(exc).__name__)[:200]


def _parse(text: str, fmt: str) -> Structure:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "cif":
                return _parse_cif(text)
            if fmt == "poscar":
                return Structure.from_str(text, fmt="poscar")
            if fmt == "extxyz":
                return _parse_extxyz(text)
            return _parse_json(text)
    except StructureError:
        raise
    except Exception as exc:  # parsers raise many types; turn them into one
        raise StructureError(f"could not read this file as {fmt.upper()}: {_first_line(exc)}") from None


def _parse_cif(text: str) -> Structure:
    from pymatgen.io.cif import CifParser

    parser = CifParser(io.StringIO(text), occupancy_tolerance=1.0)
    try:
        structures = parser.parse_structures(primitive=False, on_error="raise")
    except ValueError as exc:
        raise StructureError(f"could not read a crystal from this CIF: {_first_line(exc)}") from None
    if not structures:
        raise StructureError("this CIF contains no complete crystal structure (lattice and atom sites)")
    if len(structures) > 1:
        raise StructureError(f"this CIF contains {len(structures)} structures; upload one structure per file")
    return structures[0]


def _parse_extxyz(text: str) -> Structure:
    from ase.io import read as ase_read
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = ase_read(io.StringIO(text), format="extxyz", index=0)
    if not atoms.pbc.any() or abs(atoms.cell.volume) < 1e-8:
        raise StructureError(
            "this XYZ file has no lattice, so it describes a molecule, not a crystal; "
            'add Lattice="..." and pbc="T T T" to the comment line (extended XYZ)'
        )
    return AseAtomsAdaptor.get_structure(atoms)


def _parse_json(text: str) -> Structure:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StructureError(f"could not read this file as JSON: {exc.msg} at line {exc.lineno}") from None
    if isinstance(obj, dict) and "structure" in obj and isinstance(obj["structure"], dict):
        obj = obj["structure"]  # e.g. a ComputedStructureEntry-like record
    if not isinstance(obj, dict) or "sites" not in obj:
        raise StructureError("this JSON is not a pymatgen Structure (expected keys 'lattice' and 'sites')")
    if "lattice" not in obj:
        raise StructureError("this JSON has no lattice, so it describes a molecule, not a crystal")
    return Structure.from_dict(obj)


def validate_structure(structure: Structure, *, max_atoms: int = DEFAULT_MAX_ATOMS) -> None:
    """Check that a structure is one SEN can analyse; raise StructureError otherwise."""
    n = len(structure)
    if n == 0:
        raise StructureError("structure has no atoms")
    if n > max_atoms:
        raise StructureError(f"structure has {n} atoms per cell, over the limit of {max_atoms}; use the primitive cell")
    matrix = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.all(np.isfinite(matrix)):
        raise StructureError("lattice contains NaN or infinite numbers")
    coords = np.asarray(structure.frac_coords, dtype=float)
    if not np.all(np.isfinite(coords)):
        raise StructureError("atom coordinates contain NaN or infinite numbers")
    det = float(np.linalg.det(matrix))
    if abs(det) < 1e-6:
        raise StructureError("cell volume is zero: the three lattice vectors are coplanar or zero")
    if det < 0:
        raise StructureError(
            "cell volume is negative (left-handed lattice vectors); swap two lattice vectors and their coordinates"
        )
    if not structure.is_ordered:
        site = next(s for s in structure if not s.is_ordered)
        raise StructureError(
            f"structure has partial occupancies / disorder (site {site.species_string}); "
            "SEN needs an ordered structure: build an ordered supercell first"
        )
    for site in structure:
        sp = site.specie
        if isinstance(sp, DummySpecies) or not isinstance(getattr(sp, "element", sp), Element):
            raise StructureError(f"unknown or dummy species {sp!s}; every site must be a real chemical element")
    _check_distances(structure)


def _check_distances(structure: Structure) -> None:
    lengths = structure.lattice.abc
    if min(lengths) < MIN_INTERATOMIC_DISTANCE:
        raise StructureError(f"a lattice vector is only {min(lengths):.2f} Å long; check the cell (lengths are in Å)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        centers, neighbors, _, dists = structure.get_neighbor_list(MIN_INTERATOMIC_DISTANCE)
    if len(dists):
        k = int(np.argmin(dists))
        i, j = int(centers[k]), int(neighbors[k])
        d = float(dists[k])
        raise StructureError(
            f"atoms {i} ({structure[i].species_string}) and {j} ({structure[j].species_string}) are only "
            f"{d:.2f} Å apart (minimum {MIN_INTERATOMIC_DISTANCE} Å); check for duplicated atoms or wrong units"
        )


def structure_to_json(structure: Structure) -> str:
    """Serialise a structure to pymatgen JSON text."""
    return json.dumps(structure.as_dict())


def is_finite_number(x: object) -> bool:
    """True for a real, finite number (used when reading targets)."""
    try:
        return math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
