"""Cheap pre-scans of structure files: how many atoms a file asks for, before any expensive parse.

Every function here runs in time linear in the file's size (no backtracking regular
expressions, no pymatgen parse) and allocates at most a small multiple of it, so
:func:`sen.io.read_structure` can refuse a file that would expand to a million atoms, or
decide that a file is risky enough to parse in a bounded worker process
(:mod:`sen.io_guard`), before pymatgen or ASE spends minutes or gigabytes on it.

The CIF scan follows the tokenisation of pymatgen's ``CifBlock`` (comments, quotes,
semicolon text fields, ``loop_``) closely enough to count the rows of each loop and to
find the symmetry operations pymatgen will apply.
"""

from __future__ import annotations

import bisect
import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from sen.errors import StructureError

#: No space group has more operations than this in its conventional setting (Fm-3m, Im-3m ...).
MAX_SPACE_GROUP_ORDER = 192
#: A CIF that lists more symmetry operations than this is broken (or hostile).
MAX_LISTED_SYMOPS = 4 * MAX_SPACE_GROUP_ORDER
#: Each output site of pymatgen's CIF expansion absorbs the images within about 3e-4 of it (its
#: merge tolerance is 1e-4 in fractional coordinates), which touch at most 2 x 2 x 2 cells of a
#: grid this fine, so occupied cells / 8 is a lower bound on the number of atoms pymatgen makes.
#: A prime keeps cell boundaries away from decimal coordinates such as 0.1 or 0.1235, so that
#: occupied cells is itself a close estimate of that number.
_GRID = 997
_CELL_KEYS = tuple(f"_cell_length_{x}" for x in "abc") + tuple(f"_cell_angle_{x}" for x in ("alpha", "beta", "gamma"))
_SYMOP_KEYS = (
    "_symmetry_equiv_pos_as_xyz",
    "_symmetry_equiv_pos_as_xyz_",
    "_space_group_symop_operation_xyz",
    "_space_group_symop_operation_xyz_",
)
_MAGCIF_PREFIXES = ("_space_group_magn", "_atom_site_moment", "_space_group_symop_magn")
_QUOTED_MARK = "\x00"  # prefixed to quoted tokens that would otherwise look like data names (NULs are refused earlier)
_NON_SPACE = re.compile(r"\S+")
_UNCERTAINTY = re.compile(r"\(.+\)*")  # pymatgen's str2float: "0.123(4)" -> 0.123


def _number(text: str) -> float:
    """pymatgen's ``str2float``: a CIF number with its uncertainty in brackets removed."""
    try:
        return float(_UNCERTAINTY.sub("", text))
    except ValueError:
        if text.strip() == ".":
            return 0.0
        raise


# ----------------------------------------------------------------------------- CIF


@dataclass
class CifBlockScan:
    """What one ``data_`` block of a CIF asks for."""

    name: str
    values: dict[str, str] = field(default_factory=dict)  # single-valued data items
    loops: dict[str, list[str]] = field(default_factory=dict)  # column name -> values, for the loops we need
    loop_rows: dict[str, int] = field(default_factory=dict)  # column name -> rows of its loop (all loops)
    magnetic: bool = False

    def get(self, key: str) -> str | list[str] | None:
        """The value(s) of a data name, as pymatgen's ``CifBlock.data`` would hold them."""
        if key in self.loops:
            return self.loops[key]
        return self.values.get(key)

    @property
    def site_rows(self) -> int:
        """Rows of the atom-site loop (pymatgen makes one or more sites from each)."""
        return self.loop_rows.get("_atom_site_label", 0)

    @property
    def has_sites(self) -> bool:
        return "_atom_site_label" in self.loop_rows or "_atom_site_label" in self.values


@dataclass
class CifScan:
    """The result of :func:`scan_cif`: blocks, and measures of how hard pymatgen's parse will be."""

    blocks: list[CifBlockScan]
    max_line: int  # longest line (characters)
    max_token: int  # longest value, text fields included (characters)
    quote_work: int  # sum over lines of (quote characters x line length): pymatgen's tokeniser is quadratic in it
    n_tokens: int


# Values we keep from loops (everything else is only counted).
_KEEP_LOOP_PREFIXES = ("_atom_site_", "_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz")
def _line_tokens(line: str, out: list[str]) -> int:
    """Append the tokens of one CIF line to ``out`` (pymatgen's rule: a quote closes only before
    whitespace or the end of the line); return this line's quote work (quotes x length)."""
    if "'" not in line and '"' not in line:
        out.extend(line.split())
        return 0
    n = len(line)
    closers: dict[str, list[int]] = {}
    for q in ("'", '"'):
        positions = []
        j = line.find(q)
        while j != -1:
            if j + 1 == n or line[j + 1].isspace():
                positions.append(j)
            j = line.find(q, j + 1)
        closers[q] = positions
    n_quotes = line.count("'") + line.count('"')
    i = 0
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
            continue
        if c in "'\"":
            ends = closers[c]
            k = bisect.bisect_right(ends, i)
            if k < len(ends):
                j = ends[k]
                token = line[i + 1 : j]
                out.append(_QUOTED_MARK + token if token.startswith(("_", "loop_")) else token)
                i = j + 1
                continue
            i += 1  # an opening quote with no closing one: pymatgen skips the character
            continue
        j = _NON_SPACE.match(line, i).end()
        out.append(line[i:j])
        i = j
    return n_quotes * n


def _strip_comment(line: str) -> str:
    """pymatgen removes ``#`` to the end of the line when it starts a line or follows whitespace."""
    j = line.find("#")
    while j != -1:
        if j == 0 or line[j - 1].isspace():
            return line[:j]
        j = line.find("#", j + 1)
    return line


def scan_cif(text: str) -> CifScan:
    """Tokenise a CIF the way pymatgen does and collect, per data block, its loops and values.

    Raises:
        StructureError: for a loop whose values do not fill whole rows (pymatgen's parser
            would fail on it with a Python error).
    """
    text = text.encode("ascii", "ignore").decode("ascii")
    blocks: list[CifBlockScan] = []
    tokens: list[str] = []
    max_line = max_token = quote_work = n_tokens = 0
    multiline: list[str] | None = None

    def flush() -> None:
        nonlocal n_tokens
        if blocks:
            n_tokens += len(tokens)
            _fill_block(blocks[-1], tokens)
        tokens.clear()

    for raw in text.split("\n"):
        if len(raw) > max_line:
            max_line = len(raw)
        if raw.lstrip().startswith("data_"):  # pymatgen splits blocks before it tokenises
            flush()
            multiline = None
            rest = raw.lstrip()[5:]
            name_tokens: list[str] = []
            _line_tokens(_strip_comment(rest), name_tokens)
            blocks.append(CifBlockScan(name=(name_tokens[0] if name_tokens else "")[:74]))
            tokens.extend(name_tokens[1:])
            continue
        line = _strip_comment(raw)
        if not line.strip():
            continue
        if multiline is not None:
            if line.startswith(";"):
                value = " ".join(multiline)
                max_token = max(max_token, len(value))
                tokens.append(_QUOTED_MARK + value if value.startswith(("_", "loop_")) else value)
                multiline = None
                line = line[1:].strip()
            else:
                multiline.append(line)
                continue
        if line.startswith(";"):
            multiline = [line[1:].strip()]
            continue
        quote_work += _line_tokens(line, tokens)
    flush()
    for block in blocks:
        for values in block.loops.values():
            for v in values:
                if len(v) > max_token:
                    max_token = len(v)
    return CifScan(blocks, max_line, max_token, quote_work, n_tokens)


def _fill_block(block: CifBlockScan, tokens: list[str]) -> None:
    """pymatgen's ``CifBlock.from_str`` state machine over one block's tokens."""
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok == "_eof":
            break
        if tok.startswith("_"):
            if any(tok.startswith(p) for p in _MAGCIF_PREFIXES):
                block.magnetic = True
            value = tokens[i + 1] if i + 1 < n else ""
            block.values[tok] = value.removeprefix(_QUOTED_MARK)  # all of them: get_symops reads several
            block.loops.pop(tok, None)
            block.loop_rows.pop(tok, None)
            i += 2
        elif tok.startswith("loop_"):
            i += 1
            columns = []
            while i < n and tokens[i].startswith("_") and not tokens[i].startswith("loop_"):
                columns.append(tokens[i])
                i += 1
            start = i
            while i < n and not tokens[i].startswith(("loop_", "_")):
                i += 1
            n_items = i - start
            if not columns:
                raise StructureError(
                    "could not read a crystal structure from this CIF file: a loop_ has no column names"
                )
            if n_items < len(columns) or n_items % len(columns):
                raise StructureError(
                    "could not read a crystal structure from this CIF file: a loop_ with "
                    f"{len(columns)} columns has {n_items} values, which is not a whole number of rows"
                )
            rows = n_items // len(columns)
            for col in columns:
                if any(col.startswith(p) for p in _MAGCIF_PREFIXES):
                    block.magnetic = True
                block.loop_rows[col] = rows
                block.values.pop(col, None)
            if any(col.startswith(_KEEP_LOOP_PREFIXES) for col in columns):
                items = tokens[start:i]
                for k, col in enumerate(columns):
                    block.loops[col] = [v.removeprefix(_QUOTED_MARK).strip() for v in items[k :: len(columns)]]
        else:
            i += 1


def cif_symops(block: CifBlockScan) -> list:
    """The symmetry operations pymatgen's CifParser will apply to this block (its own rules).

    Raises:
        StructureError: if the block lists more operations than any space group has.
    """
    from pymatgen.io.cif import CifParser

    for key in _SYMOP_KEYS:
        listed = block.get(key)
        if isinstance(listed, list) and len(listed) > MAX_LISTED_SYMOPS:
            raise StructureError(
                f"this CIF lists {len(listed):,} symmetry operations, but a space group has at most "
                f"{MAX_SPACE_GROUP_ORDER}; check the {key} loop"
            )
    _hold_space_groups(block)
    shim = CifParser.__new__(CifParser)
    shim.warnings = []
    data = _BlockData({k: v for k, v in {**block.values, **block.loops}.items() if v is not None})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(shim.get_symops(data))
    except Exception:  # pymatgen falls back to P1 or fails later with a clear error of ours
        from pymatgen.core.operations import SymmOp

        return [SymmOp.from_xyz_str("x, y, z")]


#: pymatgen caches SpaceGroup objects only while someone holds them (a WeakValueDictionary), and
#: building one takes up to 0.9 s (Fm-3m); holding the few a process meets makes the second use,
#: pymatgen's own parse right after this scan, and every later file of that group cheap.
_HELD_SPACE_GROUPS: dict[object, object] = {}
_SYMBOL_KEYS = (
    "_symmetry_space_group_name_H-M",
    "_symmetry_space_group_name_H_M",
    "_symmetry_space_group_name_H-M_",
    "_symmetry_space_group_name_H_M_",
    "_space_group_name_Hall",
    "_space_group_name_Hall_",
    "_space_group_name_H-M_alt",
    "_space_group_name_H-M_alt_",
    "_symmetry_space_group_name_hall",
    "_symmetry_space_group_name_hall_",
    "_symmetry_space_group_name_h-m",
    "_symmetry_space_group_name_h-m_",
)
_NUMBER_KEYS = ("_space_group_IT_number", "_space_group_IT_number_", "_symmetry_Int_Tables_number", "_symmetry_Int_Tables_number_")


def _hold_space_groups(block: CifBlockScan) -> None:
    """Build (once per process) the SpaceGroup objects pymatgen's get_symops will ask for."""
    from pymatgen.symmetry.groups import SYMM_DATA, SpaceGroup

    if any(block.get(k) for k in _SYMOP_KEYS):
        return
    encoding = _space_group_encoding(SYMM_DATA)
    for key in _SYMBOL_KEYS:
        value = block.values.get(key)
        if value:
            spg = encoding.get(re.sub(r"[\s_]", "", value))
            if spg and spg not in _HELD_SPACE_GROUPS:
                try:
                    _HELD_SPACE_GROUPS[spg] = SpaceGroup(spg)
                except ValueError:
                    pass
    for key in _NUMBER_KEYS:
        value = block.values.get(key)
        if value:
            try:
                number = int(_number(value))
            except (ValueError, OverflowError):
                continue
            if 1 <= number <= 230 and number not in _HELD_SPACE_GROUPS:
                _HELD_SPACE_GROUPS[number] = SpaceGroup.from_int_number(number)


def _space_group_encoding(symm_data: dict) -> dict[str, str]:
    if "encoding" not in _HELD_SPACE_GROUPS:
        _HELD_SPACE_GROUPS["encoding"] = {re.sub(r"[\s_]", "", k): k for k in symm_data["space_group_encoding"]}
    return _HELD_SPACE_GROUPS["encoding"]  # type: ignore[return-value]


class _BlockData:
    """The one attribute of pymatgen's ``CifBlock`` that ``CifParser.get_symops`` reads."""

    def __init__(self, data: dict):
        self.data = data


@dataclass
class CifAtomCount:
    """How many atoms a CIF block makes: listed rows, symmetry operations and a lower bound."""

    rows: int
    n_ops: int
    estimate: int  # distinct positions on a fine grid: close to what pymatgen makes
    at_least: int  # pymatgen's expansion makes at least this many atoms


def cif_atom_count(block: CifBlockScan, max_atoms: int) -> CifAtomCount:
    """Count the atoms a CIF block will expand to, cheaply, refusing early if there are too many.

    The positions are the listed rows times pymatgen's symmetry operations; their count is
    bounded from below by the occupied cells of a 1/1000 grid divided by 8 (an atom that
    pymatgen keeps absorbs images within 1e-4 of it, which touch at most 2 x 2 x 2 cells).

    Raises:
        StructureError: if the block makes more than ``max_atoms`` atoms, or would need more
            than ``max_atoms`` x 192 positions generated to find out.
    """
    rows = block.site_rows
    if block.magnetic:
        ops_n = max(1, len(block.loops.get("_space_group_symop_magn_operation.xyz", []) or [1])) * max(
            1, len(block.loops.get("_space_group_symop_magn_centering.xyz", []) or [1])
        )
        ops = None
    else:
        ops = cif_symops(block)
        ops_n = len(ops)
    if rows * ops_n > max_atoms * MAX_SPACE_GROUP_ORDER:
        raise StructureError(
            f"this CIF lists {rows:,} atom sites and {ops_n} symmetry operations, which would make up to "
            f"{rows * ops_n:,} atoms, far over the limit of {max_atoms} per cell; use the primitive cell "
            "or check the space group"
        )
    if ops is None or rows == 0:
        return CifAtomCount(rows, ops_n, rows * ops_n, min(rows, 1))
    coords = _site_coords(block)
    if not len(coords):
        return CifAtomCount(rows, ops_n, 0, 0)
    rot = np.array([op.rotation_matrix for op in ops], dtype=float)
    trans = np.array([op.translation_vector for op in ops], dtype=float)
    with np.errstate(all="ignore"):
        images = np.einsum("oij,nj->noi", rot, coords) + trans  # (rows, ops, 3)
        images = images.reshape(-1, 3)
        images = images[np.all(np.isfinite(images), axis=1)]
        images -= np.floor(images)
        cells = np.rint(images * _GRID).astype(np.int64) % _GRID
    keys = (cells[:, 0] * _GRID + cells[:, 1]) * _GRID + cells[:, 2]
    estimate = len(np.unique(keys))
    at_least = math.ceil(estimate / 8)
    if at_least > max_atoms and ops_n == 1:
        raise StructureError(
            f"this CIF lists {len(coords):,} atom sites, over the limit of {max_atoms} atoms per cell; "
            "use the primitive cell"
        )
    if at_least > max_atoms:
        raise StructureError(
            f"this CIF lists {rows:,} atom sites and {ops_n} symmetry operations, which make about "
            f"{estimate:,} atoms per cell, over the limit of {max_atoms}; use the primitive cell "
            "or check the space group"
        )
    return CifAtomCount(rows, ops_n, estimate, at_least)


def _site_coords(block: CifBlockScan) -> np.ndarray:
    """Fractional coordinates of the rows pymatgen will use (parsable symbol, positive occupancy)."""
    from pymatgen.io.cif import CifParser

    def column(key: str) -> list[str]:
        v = block.get(key)
        return v if isinstance(v, list) else ([v] if isinstance(v, str) else [])

    labels = column("_atom_site_label")
    symbols = column("_atom_site_type_symbol")
    occupancies = column("_atom_site_occupancy")
    xs, ys, zs = (column(f"_atom_site_fract_{a}") for a in "xyz")
    shim = CifParser.__new__(CifParser)
    shim.warnings = []
    parsed: dict[str, bool] = {}
    out = []
    for idx in range(min(len(labels), len(xs), len(ys), len(zs))):
        sym = symbols[idx] if idx < len(symbols) else labels[idx]
        if sym not in parsed:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    parsed[sym] = bool(shim._parse_symbol(sym))
            except Exception:
                parsed[sym] = False
        if not parsed[sym]:
            continue
        try:
            occu = _number(occupancies[idx]) if idx < len(occupancies) else 1.0
        except ValueError:
            occu = 1.0
        if not occu > 0:
            continue
        try:
            xyz = [_number(xs[idx]), _number(ys[idx]), _number(zs[idx])]
        except ValueError:
            continue
        out.append([_ideal_fraction(v) for v in xyz])
    return np.array(out, dtype=float).reshape(-1, 3)


def _ideal_fraction(v: float) -> float:
    """pymatgen rounds 0.3333 to 1/3 and 0.6667 to 2/3 (within 1e-4) before applying symmetry."""
    for f in (1 / 3, 2 / 3):
        if math.isfinite(v) and math.isclose(v / f, 1, abs_tol=1e-4, rel_tol=0):
            return f
    return v


def cell_problem(block: CifBlockScan) -> str | None:
    """A user-readable reason why this block's cell parameters cannot make a lattice, or None."""
    missing = [k for k in _CELL_KEYS if block.values.get(k) is None]
    if missing:
        if block.values.get("_symmetry_cell_setting") or block.values.get("_space_group_crystal_system"):
            return None  # pymatgen can complete the cell from the crystal system
        return f"the cell parameters are missing ({', '.join(missing)})"
    values = []
    for k in _CELL_KEYS:
        try:
            values.append(_number(block.values[k]))
        except ValueError:
            return f"the cell parameter {k} is not a number ({block.values[k][:40]!r})"
    lengths, angles = values[:3], values[3:]
    if any(not math.isfinite(v) for v in values):
        return None  # reported later as "lattice contains NaN or infinite numbers"
    if any(v <= 0 for v in lengths):
        return "a cell length is zero or negative"
    if any(not 0 < v < 180 for v in angles):
        return "a cell angle is not between 0 and 180 degrees"
    return None


# ----------------------------------------------------------------------------- POSCAR and XYZ


def poscar_atom_count(text: str) -> int | None:
    """The number of atoms a POSCAR declares (its counts line), as pymatgen reads it; None if unclear.

    Raises:
        StructureError: for a negative count.
    """
    first_chunk = re.split(r"\n[ \t\r\f\v]*\n", text.strip("\n"), maxsplit=1)[0]  # pymatgen reads the first chunk
    lines = []
    for line in first_chunk.split("\n")[:32]:
        if "#" in line:
            line = line[: line.index("#")]
        lines.append(line.strip())
    counts: list[int] | None = None
    try:
        counts = [int(t) for t in lines[5].split()]
    except (ValueError, IndexError):
        for k in range(1, 11):
            try:
                int(lines[5 + k].split()[0])
            except (ValueError, IndexError):
                continue
            try:
                counts = [int(t) for line in lines[5 + k : 5 + 2 * k] for t in line.split()]
            except ValueError:
                counts = None
            break
    if counts is None:
        return None
    if any(c < 0 for c in counts):
        raise StructureError("this POSCAR has a negative atom count on its counts line; check the file")
    return sum(counts)


def xyz_atom_count(text: str) -> int | None:
    """The atom count on the first line of an (extended) XYZ file; None if it is not an integer."""
    first = text.lstrip("\n").split("\n", 1)[0].strip()
    try:
        return int(first)
    except ValueError:
        return None
