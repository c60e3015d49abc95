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
from sen.io_guard import ReaderFailed, fork_available, run_bounded
from sen.io_json import parse_structure_json
from sen.io_scan import cell_problem, cif_atom_count, poscar_atom_count, scan_cif, xyz_atom_count

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

    Any input is answered quickly: a cheap pre-scan counts the atoms a file asks for (CIF
    atom-site rows times symmetry operations, POSCAR and XYZ count lines, JSON site lists)
    and refuses too many before any expensive parse; files the pre-scan calls risky are
    parsed in a forked child with a time limit (:data:`PARSE_TIME_LIMIT`, seconds) and a
    memory limit (:mod:`sen.io_guard`). Atoms outside the cell are wrapped into it.

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
        StructureError: the file cannot be read or describes something SEN cannot handle;
            no other exception escapes.
    """
    try:
        data, filename = _load_bytes(source, filename, max_bytes)
        text = _decode(data, filename)
        fmt = str(fmt or detect_format(filename, text)).lower()
        if fmt not in FORMATS:
            raise StructureError(f"unknown format {str(fmt)[:40]!r}; use one of {', '.join(FORMATS)}")
        structure = _parse(text, fmt, max_atoms)
        if validate_structure(structure, max_atoms=max_atoms) is structure:
            structure._sen_checked = _content(structure)  # Predictor.predict need not check it again
    except StructureError:
        raise
    except MemoryError:
        raise StructureError("reading this file needed too much memory; upload a single unit cell") from None
    except RecursionError:
        raise StructureError("this file is nested too deeply to read") from None
    except Exception:  # a reader failing outside the per-format handlers: say what the user can do
        raise StructureError(_NOT_A_STRUCTURE) from None
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


_NOT_A_STRUCTURE = "this does not look like a CIF, POSCAR, extended XYZ or pymatgen JSON file"
#: What each format needs, said when its reader fails without a better reason.
_FORMAT_HELP = {
    "cif": (
        "could not read a crystal structure from this CIF file: it needs the cell parameters "
        "(_cell_length_a/b/c, _cell_angle_alpha/beta/gamma) and an atom-site loop "
        "(_atom_site_label, _atom_site_fract_x/y/z) with numbers in them"
    ),
    "poscar": (
        "could not read this POSCAR file: it needs a comment line, a scale factor, three lattice vectors, "
        "the element names, the atom counts, Direct or Cartesian, and one coordinate line per atom"
    ),
    "extxyz": (
        "could not read this extended XYZ file: it needs the number of atoms, a comment line with "
        'Lattice="..." and one line per atom (element x y z)'
    ),
    "json": "could not read this pymatgen JSON file",
}

#: Seconds a risky file may take to parse in the bounded worker (the whole answer stays under 2 s).
PARSE_TIME_LIMIT = 1.5
# A file is parsed in-process only when the pre-scan shows it is small and simple; measured
# worst cases of pymatgen's CIF parse at these bounds are in benchmarks/fuzz_io.py's notes.
_SAFE_BYTES = 256 * 1024
_SAFE_LINE = 4096  # characters in a line or a text field (CIF 1.1 allows 2048)
_SAFE_QUOTE_WORK = 2_000_000  # pymatgen's CIF tokeniser is quadratic in quotes per line
#: Quote work refused outright: pymatgen's tokeniser does about 1.8e8 units a second here
#: (measured: 1.9e8 took 1.04 s), so this is about 0.5 s; a CIF 1.1 line (at most 2,048
#: characters) full of quotes is 4.2e6, and the parse is bounded in a worker below this.
_MAX_QUOTE_WORK = 100_000_000
_SAFE_CIF_BLOCKS = 4
_SAFE_CIF_ROWS = 600
_SAFE_CIF_POSITIONS = 2_000  # atom-site rows x symmetry operations (Fm-3m, 20 rows: 3,840, 0.86 s)
_SAFE_XYZ_BYTES = 64 * 1024


#: No line of a real structure file comes near this (CIF 1.1 allows 2048 characters).
MAX_LINE_LENGTH = 65_536


def _parse(text: str, fmt: str, max_atoms: int) -> Structure:
    """Pre-scan, then parse in-process (simple files) or in a bounded worker (risky ones)."""
    if fmt == "json":
        return parse_structure_json(text, max_atoms=max_atoms)
    longest = _longest_line(text)
    if longest > MAX_LINE_LENGTH:
        raise StructureError(
            f"this file has a line of {longest:,} characters, and structure files have lines of at most a few "
            "thousand; check that it is a CIF, POSCAR or XYZ file"
        )
    if fmt == "cif":
        text = _normalise_cif(text)
        plain = _plain_cif(text, longest, max_atoms)
        if plain is not None:
            return plain
        risky = _precheck_cif(text, max_atoms)
    elif fmt == "poscar":
        risky = _precheck_poscar(text, max_atoms)
    else:
        risky = _precheck_extxyz(text, max_atoms)
    if risky and fork_available():
        try:
            return run_bounded(_parse_quietly, (text, fmt), time_limit=PARSE_TIME_LIMIT, what="this file")
        except ReaderFailed:
            raise StructureError(_FORMAT_HELP[fmt]) from None
    return _parse_quietly(text, fmt)


def _parse_quietly(text: str, fmt: str) -> Structure:
    """The library parse itself; every exception but StructureError is worded per format."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "cif":
                return _parse_cif(text)
            if fmt == "poscar":
                return Structure.from_str(text, fmt="poscar")
            return _parse_extxyz(text)
    except StructureError:
        raise
    except MemoryError:
        raise StructureError("reading this file needed too much memory; upload a single unit cell") from None
    except RecursionError:
        raise StructureError("this file is nested too deeply to read") from None
    except Exception:  # parsers raise many types, with messages about their internals
        raise StructureError(_FORMAT_HELP[fmt]) from None


def _plain_cif(text: str, longest: int, max_atoms: int) -> Structure | None:
    """A small plain P1 CIF read by :func:`sen.io_cif.parse_plain_p1` before the pre-scan, or None.

    The pre-scan costs twice that parse, and refuses nothing such a file can hold that is not checked
    here: gemmi reads one data block in linear time, the cell parameters are the ones the pre-scan
    accepts, and a file with more sites than ``max_atoms`` (or than the pre-scan's safe row count, so that
    the duplicate-site check stays small) goes the long way round, which words any refusal.
    """
    if len(text) > _SAFE_BYTES or longest > _SAFE_LINE:
        return None
    from sen.io_cif import parse_plain_p1

    return parse_plain_p1(text, max_sites=min(max_atoms, _SAFE_CIF_ROWS))


def _normalise_cif(text: str) -> str:
    """One line ending, no blank lines: the same CIF for pymatgen (it drops blank lines itself),
    without the blank-line runs on which its block splitting is quadratic."""
    for sep in ("\r\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e"):
        if sep in text:
            text = text.replace(sep, "\n")
    return "\n".join(line for line in text.split("\n") if line.strip())


def _precheck_cif(text: str, max_atoms: int) -> bool:
    """Count the atoms each block makes, refusing too many; True if the parse is risky."""
    scan = scan_cif(text)
    named = {b.name: b for b in scan.blocks}  # pymatgen keeps the last block of each name
    site_blocks = [b for b in named.values() if b.has_sites]
    if not scan.blocks:
        raise StructureError(_NOT_A_STRUCTURE + " (a CIF starts its data with a data_ line)")
    if not site_blocks:
        raise StructureError(
            "could not read a crystal structure from this CIF file: it has no atom-site loop "
            "(_atom_site_label, _atom_site_fract_x/y/z)"
        )
    if len(site_blocks) > 1:
        raise StructureError(f"this CIF contains {len(site_blocks)} structures; upload one structure per file")
    if scan.quote_work > _MAX_QUOTE_WORK:
        raise StructureError(
            f"this CIF has lines of up to {scan.max_line:,} characters packed with quote marks, too many to "
            "read; check that each quoted value is closed and that values fit on lines of at most 2048 characters"
        )
    rows = positions = estimate = 0
    for block in site_blocks:
        problem = cell_problem(block)
        if problem:
            raise StructureError(f"could not read a crystal structure from this CIF file: {problem}")
        count = cif_atom_count(block, max_atoms)
        rows += count.rows
        positions += count.rows * count.n_ops
        estimate = max(estimate, count.estimate)
    return (
        len(text) > _SAFE_BYTES
        or max(scan.max_line, scan.max_token) > _SAFE_LINE
        or scan.quote_work > _SAFE_QUOTE_WORK
        or len(scan.blocks) > _SAFE_CIF_BLOCKS
        or any(b.magnetic for b in site_blocks)
        or rows > _SAFE_CIF_ROWS
        or positions > _SAFE_CIF_POSITIONS
        or estimate > max_atoms
    )


def _looks_like_poscar(text: str) -> bool:
    """Scale factor on line 2, three numbers on each of lines 3-5."""
    lines = text.split("\n", 6)
    if len(lines) < 6:
        return False
    try:
        float(lines[1].split("#")[0])
        return all(len([float(x) for x in line.split("#")[0].split()]) == 3 for line in lines[2:5])
    except ValueError:
        return False


def _precheck_poscar(text: str, max_atoms: int) -> bool:
    """Refuse a counts line over the limit; True if the parse is risky."""
    if not _looks_like_poscar(text.strip("\n")):
        raise StructureError(_NOT_A_STRUCTURE)
    n = poscar_atom_count(text)
    if n is not None and n > max_atoms:
        raise StructureError(
            f"this POSCAR declares {n:,} atoms on its counts line, over the limit of {max_atoms} "
            "atoms per cell; use the primitive cell"
        )
    return n is None or len(text) > _SAFE_BYTES or _longest_line(text) > _SAFE_LINE


def _precheck_extxyz(text: str, max_atoms: int) -> bool:
    """Refuse an atom count over the limit; True if the parse is risky."""
    n = xyz_atom_count(text)
    if n is None:
        raise StructureError(
            "could not read this extended XYZ file: its first line must be the number of atoms"
        )
    if n > max_atoms:
        raise StructureError(
            f"this XYZ file says it has {n:,} atoms, over the limit of {max_atoms} atoms per cell; "
            "use the primitive cell"
        )
    if n < 1:
        raise StructureError("this XYZ file says it has no atoms; its first line must be the number of atoms")
    return len(text) > _SAFE_XYZ_BYTES or _longest_line(text) > _SAFE_LINE


def _longest_line(text: str) -> int:
    return max(map(len, text.split("\n")), default=0)


def _parse_cif(text: str) -> Structure:
    """pymatgen's reader, for every CIF that :func:`_plain_cif` did not read."""
    from pymatgen.io.cif import CifParser

    # check_cif=False: pymatgen's own check only compares the parsed formula with _chemical_formula_sum
    # to warn (warnings are silenced here); the structure is the same, the parse 6 % faster
    parser = CifParser.from_str(text, occupancy_tolerance=1.0, check_cif=False)
    structures = parser.parse_structures(primitive=False, on_error="raise")
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


# ----------------------------------------------------------------------------- validation

#: Longest lattice vector accepted (Å). The Materials Project data SEN was trained on reaches
#: 162 Å; beyond a few hundred Å the neighbour search's cell grid grows past 100 MB.
MAX_LATTICE_LENGTH = 250.0
#: Smallest volume per atom accepted (Å^3). Real crystals have at least about 5 (diamond 5.7;
#: the training data's densest has 4.8), so this bounds the neighbours within the 8 Å cutoff
#: to about 1,100 per atom, 540,000 pairs for 500 atoms.
MIN_VOLUME_PER_ATOM = 2.0
#: Fractional coordinates beyond this are an error, not an atom in a neighbouring cell.
MAX_FRACTIONAL_COORDINATE = 1e3
#: The neighbour-search cutoff SEN's featuriser uses (Å; sen.graph.DEFAULT_CUTOFF).
NEIGHBOR_CUTOFF = 8.0
#: Atoms x periodic images a neighbour search within the cutoff may visit. The training data
#: needs at most 12,936; a very flat or skewed cell (a non-reduced basis) needs millions.
MAX_NEIGHBOR_IMAGES = 1_000_000


def validate_structure(structure: Structure, *, max_atoms: int = DEFAULT_MAX_ATOMS) -> Structure:
    """Check that a structure is one SEN can analyse; raise StructureError otherwise.

    Checks, in order, before any neighbour search: the number of atoms, finite lattice and
    coordinates (no fractional coordinate beyond 1000), a positive (right-handed) cell volume,
    lattice lengths between 0.5 and 250 Å, at least 2 Å^3 per atom, a cell that is not so
    flat or skewed that an 8 Å neighbour search needs over a million periodic images, an
    ordered structure of real elements, and no two atoms closer than 0.5 Å.

    Returns:
        The structure to featurise: ``structure`` itself, or, when some sites lie outside the cell,
        a copy with them wrapped into it (the same crystal; the given structure is never changed),
        so that later neighbour searches stay bounded.

    Raises:
        StructureError: the structure fails a check; no other exception escapes.
    """
    try:
        checked = getattr(structure, "_sen_checked", None)
        if checked is not None and len(structure) <= max_atoms and checked == _content(structure):
            return structure  # read_structure checked this very content (and it has not changed since)
        return _validate(structure, max_atoms)
    except StructureError:
        raise
    except MemoryError:
        raise StructureError("checking this structure needed too much memory; upload a single unit cell") from None
    except Exception:
        raise StructureError("this structure could not be checked: its lattice or sites are malformed") from None


def _content(structure: Structure) -> tuple:
    """Everything :func:`validate_structure` checks, as exact values: lattice, coordinates, species."""
    # each site's composition, not Structure.species, which raises for a disordered site (_validate words that)
    return (structure.lattice.matrix.tobytes(), structure.frac_coords.tobytes(), tuple(str(s.species) for s in structure))


def _validate(structure: Structure, max_atoms: int) -> Structure:
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
    far = float(np.abs(coords).max())
    if far > MAX_FRACTIONAL_COORDINATE:
        raise StructureError(
            f"an atom's fractional coordinate is {far:.3g}, over {MAX_FRACTIONAL_COORDINATE:g} cells away; "
            "check the coordinates (fractional vs Cartesian) and the lattice"
        )
    with np.errstate(all="ignore"):
        det = float(np.linalg.det(matrix))
    if not math.isfinite(det):
        raise StructureError("lattice contains numbers too large to compute with; check the cell (lengths in Å)")
    if abs(det) < 1e-6:
        raise StructureError("cell volume is zero: the three lattice vectors are coplanar or zero")
    if det < 0:
        raise StructureError(
            "cell volume is negative (left-handed lattice vectors); swap two lattice vectors and their coordinates"
        )
    lengths = np.linalg.norm(matrix, axis=1)
    if lengths.min() < MIN_INTERATOMIC_DISTANCE:
        raise StructureError(f"a lattice vector is only {lengths.min():.2f} Å long; check the cell (lengths are in Å)")
    if lengths.max() > MAX_LATTICE_LENGTH:
        axis = "abc"[int(np.argmax(lengths))]
        raise StructureError(
            f"lattice vector {axis} is {lengths.max():.4g} Å long, over the limit of {MAX_LATTICE_LENGTH:g} Å; "
            "check the units (Å, not Bohr or pm) or upload a smaller cell"
        )
    per_atom = det / n
    if per_atom < MIN_VOLUME_PER_ATOM:
        raise StructureError(
            f"the cell is too dense: {per_atom:.3g} Å³ per atom ({n} atoms in {det:.4g} Å³), and real crystals "
            "have at least about 5; check the lattice scale (Å) and for duplicated atoms"
        )
    heights = det / np.linalg.norm(np.cross(matrix[[1, 2, 0]], matrix[[2, 0, 1]]), axis=1)
    images = n * float(np.prod(2 * np.ceil(NEIGHBOR_CUTOFF / heights) + 1))
    if images > MAX_NEIGHBOR_IMAGES:
        raise StructureError(
            f"the cell is too flat or skewed: its thinnest layer is {heights.min():.3g} Å, so a "
            f"{NEIGHBOR_CUTOFF:g} Å neighbour search would visit {images:,.0f} periodic images; "
            "use a reduced (Niggli) cell"
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
    if np.any((coords < 0) | (coords >= 1)):
        structure = structure.copy()
        for site in structure:
            site.to_unit_cell(in_place=True)
    _check_distances(structure)
    return structure


def _check_distances(structure: Structure) -> None:
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
    """A structure as pymatgen JSON text (what :func:`read_structure` reads back with ``fmt="json"``)."""
    return json.dumps(structure.as_dict())
