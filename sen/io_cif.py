"""A fast reader for plain P1 CIFs (the files pymatgen's CifWriter writes), giving pymatgen's own Structure.

pymatgen's CIF parser spends 2-8 ms on a 20-atom cell, most of it generality a plain file does not
need (symmetry expansion with duplicate search, oxidation-state and magnetic tags). Files that use only
the tags of :data:`PLAIN_TAGS`, with the identity as their one symmetry operation, plain element symbols,
occupancy 1, plain decimal numbers and no two sites within pymatgen's site tolerance, are tokenised by
gemmi (a C++ CIF parser) and built into the Structure pymatgen would return: the same lattice
(``Lattice.from_parameters``), fractional coordinates wrapped into [0, 1) and rounded to 1/3 and 2/3
within pymatgen's ``frac_tolerance``, the site labels, and pymatgen's site order (that of ``get_sorted_structure``).
Every other file (and anything gemmi does not read) gives None, and pymatgen reads it as before. The two
readers are compared on every crystal of the training data and the gallery (``tests/test_io_cif.py``).
"""

from __future__ import annotations

import math
import re
from functools import cmp_to_key

import numpy as np
from pymatgen.core import Element, Lattice, Structure

#: Every tag a plain P1 CIF may use (pymatgen's CifWriter writes these and nothing else).
PLAIN_TAGS = frozenset(
    {
        "_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta",
        "_cell_angle_gamma", "_cell_volume", "_cell_formula_units_z", "_symmetry_space_group_name_h-m",
        "_symmetry_int_tables_number", "_chemical_formula_structural", "_chemical_formula_sum",
        "_symmetry_equiv_pos_site_id", "_symmetry_equiv_pos_as_xyz", "_atom_site_type_symbol",
        "_atom_site_label", "_atom_site_symmetry_multiplicity", "_atom_site_fract_x", "_atom_site_fract_y",
        "_atom_site_fract_z", "_atom_site_occupancy",
    }
)  # fmt: skip
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_ELEMENT = re.compile(r"[A-Z][a-z]?")
_LABEL = re.compile(r"[A-Za-z0-9_+\-]{1,32}")
_FRAC_TOLERANCE = 1e-4  # pymatgen's CifParser default: 1/3 and 2/3 are restored within it
_SITE_TOLERANCE = 1e-4  # pymatgen's CifParser default: sites closer than this (fractional) are merged
_MIN_THICKNESS = 0.01  # Å, pymatgen refuses thinner cells


def parse_plain_p1(text: str, max_sites: int | None = None) -> Structure | None:
    """pymatgen's Structure for a plain P1 CIF (see the module docstring), or None for any other file
    (and for one of more than ``max_sites`` sites, declined before any work that grows with their square)."""
    try:
        import gemmi

        doc = gemmi.cif.read_string(text)
    except Exception:  # not a CIF gemmi reads: pymatgen decides what it is
        return None
    if len(doc) != 1:
        return None
    block = doc[0]
    tags = set()
    for item in block:
        if item.pair is not None:
            tags.add(item.pair[0].lower())
        elif item.loop is not None:
            tags.update(t.lower() for t in item.loop.tags)
        else:  # save frames and anything else
            return None
    if not tags <= PLAIN_TAGS:
        return None
    ops = list(block.find_values("_symmetry_equiv_pos_as_xyz"))
    if len(ops) != 1 or gemmi.cif.as_string(ops[0]).replace(" ", "").lower() != "x,y,z":
        return None
    table = block.find("_atom_site_", ["type_symbol", "label", "fract_x", "fract_y", "fract_z", "?occupancy"])
    if len(table) == 0 or (max_sites is not None and len(table) > max_sites):
        return None
    try:
        cell = [_number(block.find_value(f"_cell_{k}")) for k in
                ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")]  # fmt: skip
        species, labels, coords = [], [], []
        for row in table:
            symbol, label = row.str(0), row.str(1)
            if not _ELEMENT.fullmatch(symbol) or symbol in ("D", "T") or not _LABEL.fullmatch(label):
                return None
            if row.has(5) and _number(row[5]) != 1.0:
                return None
            coords.append([_fraction(_number(row[i])) for i in (2, 3, 4)])
            species.append(Element(symbol))
            labels.append(label)
    except (ValueError, TypeError):  # a value that is not a plain number, an unknown element
        return None
    if not (all(0 < v < math.inf for v in cell[:3]) and all(0 < v < 180 for v in cell[3:])):
        return None  # pymatgen's path words the refusal
    try:
        lattice = Lattice.from_parameters(*cell)
        if not min(lattice.d_hkl(hkl) for hkl in ((1, 0, 0), (0, 1, 0), (0, 0, 1))) >= _MIN_THICKNESS:
            return None
        frac = np.array(coords, dtype=float)
        frac -= np.floor(frac)  # pymatgen wraps every coordinate into [0, 1)
        if not np.isfinite(frac).all() or _has_near_duplicates(frac):
            return None
        order = sorted(range(len(species)), key=cmp_to_key(_site_order([el.X for el in species], species)))
        return Structure(lattice, [species[i] for i in order], frac[order], labels=[labels[i] for i in order])
    except Exception:  # a cell pymatgen cannot build either: its own reader gives the reason
        return None


def _site_order(x: list[float], species: list[Element]):
    """pymatgen's Site.__lt__ (electronegativity, then symbol) as a comparison of site indices, so that
    ``sorted`` (the same stable sort ``get_sorted_structure`` runs) puts the sites in pymatgen's order."""

    def less(i: int, j: int) -> bool:
        if x[i] < x[j]:
            return True
        if x[i] > x[j]:
            return False
        return species[i].symbol < species[j].symbol

    return lambda i, j: -1 if less(i, j) else (1 if less(j, i) else 0)


def _number(value: str | None) -> float:
    if value is None or not _NUMBER.fullmatch(value):
        raise ValueError(value)
    return float(value)


def _fraction(x: float) -> float:
    """pymatgen's rounding of finite-precision thirds (0.3333 -> 1/3) before it uses a coordinate."""
    for ideal in (1 / 3, 2 / 3):
        if math.isclose(x / ideal, 1, abs_tol=_FRAC_TOLERANCE, rel_tol=0):
            return ideal
    return x


def _has_near_duplicates(frac: np.ndarray) -> bool:
    """True if two sites are within pymatgen's site tolerance of each other (periodically)."""
    if len(frac) < 2:
        return False
    d = frac[:, None, :] - frac[None, :, :]
    d -= np.round(d)
    close = (np.abs(d) < _SITE_TOLERANCE).all(-1)
    np.fill_diagonal(close, False)
    return bool(close.any())
