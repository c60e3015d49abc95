"""What spglib sees in a crystal: space group, point group, Wyckoff orbits ("symmetry clusters").

Symmetry is an *input* to SEN, so everything the network uses is computed here, at a
stated tolerance, and is independent of the choice of unit cell, of atom order and of
rotations and translations of the structure.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import spglib
from pymatgen.core import Structure

from sen.errors import StructureError

DEFAULT_SYMPREC = 0.01  # Å
DEFAULT_ANGLE_TOLERANCE = 5.0  # degrees

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")

#: The 32 crystallographic point groups in spglib's notation, in International Tables order.
POINT_GROUPS = (
    "1", "-1", "2", "m", "2/m", "222", "mm2", "mmm", "4", "-4", "4/m", "422", "4mm", "-42m",
    "4/mmm", "3", "-3", "32", "3m", "-3m", "6", "-6", "6/m", "622", "6mm", "-6m2", "6/mmm",
    "23", "m-3", "432", "-43m", "m-3m",
)  # fmt: skip

#: Order of each point group (number of its operations).
POINT_GROUP_ORDERS = dict(
    zip(POINT_GROUPS, (1, 2, 2, 2, 4, 4, 4, 8, 4, 4, 8, 8, 8, 8, 16, 3, 6, 6, 6, 12, 6, 6, 12, 12, 12, 12, 24,
                       12, 24, 24, 24, 48), strict=True)
)  # fmt: skip


def crystal_system_of(space_group_number: int) -> str:
    """Crystal system of a space group (1-230)."""
    bounds = (2, 15, 74, 142, 167, 194, 230)
    for name, upper in zip(CRYSTAL_SYSTEMS, bounds, strict=False):
        if space_group_number <= upper:
            return name
    raise ValueError(f"space group number out of range: {space_group_number}")


@dataclass(frozen=True)
class WyckoffOrbit:
    """One symmetry cluster: the atoms of the cell that symmetry maps onto each other."""

    index: int  # orbit number in this cell, 0..n_orbits-1, in order of first atom
    element: str
    wyckoff_letter: str
    multiplicity: int  # in the conventional (standardised) cell, as in International Tables
    site_symmetry: str  # oriented site-symmetry symbol, e.g. "-43m" or "mm2.."
    atom_indices: tuple[int, ...]  # indices into the analysed structure

    @property
    def label(self) -> str:
        """Short label such as ``O 3c``."""
        return f"{self.element} {self.multiplicity}{self.wyckoff_letter}"


@dataclass(frozen=True)
class SymmetryReport:
    """Symmetry of one crystal as found by spglib at ``symprec`` (Å) and ``angle_tolerance`` (°)."""

    space_group_symbol: str
    space_group_number: int
    hall_symbol: str
    point_group: str
    crystal_system: str
    symprec: float
    angle_tolerance: float
    n_operations: int  # operations spglib finds for this cell (those that also map its lattice onto itself)
    wyckoff_letters: tuple[str, ...]  # per atom
    site_symmetry_symbols: tuple[str, ...]  # per atom
    orbit_index: np.ndarray  # per atom, 0..n_orbits-1
    site_symmetry_order: np.ndarray  # per atom: order of the site-symmetry group
    orbits: tuple[WyckoffOrbit, ...] = field(default_factory=tuple)
    n_primitive_atoms: int = 0  # atoms in spglib's primitive cell (0: not known)

    @property
    def n_cells(self) -> float:
        """Number of primitive cells in the analysed cell (atoms / atoms of the primitive cell;
        1 for a primitive cell, 2 for a C-centred conventional cell or a 2x1x1 supercell of a
        primitive one); 1.0 when the primitive cell's size is not known."""
        n_atoms = len(self.orbit_index)
        return n_atoms / self.n_primitive_atoms if self.n_primitive_atoms else 1.0

    @property
    def n_orbits(self) -> int:
        """Number of symmetry clusters (Wyckoff orbits) in the cell."""
        return len(self.orbits)

    @property
    def orbit_labels(self) -> list[str]:
        """Per-atom orbit label, e.g. ``["Sr 1a", "Ti 1b", "O 3c", ...]``."""
        return [self.orbits[i].label for i in self.orbit_index]

    def summary(self) -> str:
        """A short human-readable report."""
        lines = [
            f"Space group: {self.space_group_symbol} (No. {self.space_group_number}), Hall {self.hall_symbol}",
            f"Crystal system: {self.crystal_system}; point group: {self.point_group}",
            f"Tolerance: {self.symprec} Å, {self.angle_tolerance}°",
            f"Wyckoff orbits ({self.n_orbits}):",
        ]
        for orb in self.orbits:
            idx = ", ".join(str(i) for i in orb.atom_indices)
            lines.append(f"  {orb.label:<10} site symmetry {orb.site_symmetry:<8} atoms {idx}")
        return "\n".join(lines)


def _spglib_cell(structure: Structure) -> tuple[np.ndarray, np.ndarray, list[int]]:
    return (structure.lattice.matrix, structure.frac_coords, list(structure.atomic_numbers))


def analyze_symmetry(
    structure: Structure,
    symprec: float = DEFAULT_SYMPREC,
    angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE,
) -> SymmetryReport:
    """Analyse the symmetry of ``structure`` with spglib.

    Args:
        structure: an ordered periodic structure.
        symprec: distance tolerance in Å (spglib's ``symprec``).
        angle_tolerance: angle tolerance in degrees.

    Raises:
        StructureError: for a tolerance outside (0, 1] Å, or if spglib cannot analyse the cell.
    """
    if not structure.is_ordered:
        raise StructureError("symmetry analysis needs an ordered structure (no partial occupancies)")
    if not (0 < symprec <= 1.0):
        raise StructureError(f"symmetry tolerance must be between 0 and 1 Å, got {symprec}")
    if not (0 < angle_tolerance <= 30):
        raise StructureError(f"angle tolerance must be between 0 and 30 degrees, got {angle_tolerance}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = spglib.get_symmetry_dataset(_spglib_cell(structure), symprec=symprec, angle_tolerance=angle_tolerance)
    if ds is None:
        raise StructureError(f"spglib could not analyse this cell at tolerance {symprec} Å; try a different tolerance")

    n_ops = len(ds.rotations)
    # Orbits under the whole space group. (``equivalent_atoms`` only uses the operations that
    # also map this cell's lattice onto itself, so it splits orbits in e.g. a 1x1x2 supercell.)
    equivalent = np.asarray(ds.crystallographic_orbits)
    # Number orbits by their first atom so the numbering follows the file's atom order.
    reps, orbit_index = np.unique(equivalent, return_inverse=True)
    orbit_sizes = np.bincount(orbit_index)
    # Orbit-stabiliser in the primitive cell: |point group| = |orbit per primitive cell| x |site group|.
    point_group_order = POINT_GROUP_ORDERS[ds.pointgroup]
    n_primitive_atoms = len(np.unique(ds.mapping_to_primitive))
    primitive_cells = len(structure) // n_primitive_atoms
    site_order = point_group_order * primitive_cells // orbit_sizes[orbit_index]
    # Multiplicity as printed in International Tables: |G / T_conventional| / |site group|.
    conv_ops = point_group_order * _CENTERING_TRANSLATIONS.get(ds.international[0], 1)
    orbits = []
    for k, rep in enumerate(reps):
        members = tuple(int(i) for i in np.flatnonzero(orbit_index == k))
        orbits.append(
            WyckoffOrbit(
                index=k,
                element=structure[int(rep)].specie.symbol,
                wyckoff_letter=ds.wyckoffs[int(rep)],
                multiplicity=int(conv_ops // site_order[int(rep)]),
                site_symmetry=ds.site_symmetry_symbols[int(rep)],
                atom_indices=members,
            )
        )
    return SymmetryReport(
        space_group_symbol=ds.international,
        space_group_number=int(ds.number),
        hall_symbol=ds.hall,
        point_group=ds.pointgroup,
        crystal_system=crystal_system_of(int(ds.number)),
        symprec=float(symprec),
        angle_tolerance=float(angle_tolerance),
        n_operations=n_ops,
        wyckoff_letters=tuple(ds.wyckoffs),
        site_symmetry_symbols=tuple(ds.site_symmetry_symbols),
        orbit_index=orbit_index.astype(np.int64),
        site_symmetry_order=site_order.astype(np.int64),
        orbits=tuple(orbits),
        n_primitive_atoms=int(n_primitive_atoms),
    )


# Lattice points per conventional cell, from the first letter of the Hermann-Mauguin symbol.
_CENTERING_TRANSLATIONS = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "R": 3, "F": 4}


def _analyzer(structure: Structure, symprec: float, angle_tolerance: float):
    # imported here: pymatgen's analyzer pulls in scipy.cluster, which prediction itself never needs
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance)


def primitive_standard_structure(
    structure: Structure, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE
) -> Structure:
    """The standardised primitive cell (spglib, via pymatgen)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _analyzer(structure, symprec, angle_tolerance).get_primitive_standard_structure()


def conventional_standard_structure(
    structure: Structure, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE
) -> Structure:
    """The standardised conventional cell (spglib, via pymatgen)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _analyzer(structure, symprec, angle_tolerance).get_conventional_standard_structure()


def point_group_index(symbol: str) -> int:
    """Index of a point group in :data:`POINT_GROUPS` (0 for an unrecognised symbol)."""
    try:
        return POINT_GROUPS.index(symbol.strip())
    except ValueError:
        return 0


# Oriented site-symmetry symbols (dots removed) that name the same point group differently.
_SITE_POINT_GROUP_ALIASES = {
    "m2m": "mm2", "2mm": "mm2", "-4m2": "-42m", "321": "32", "312": "32", "3m1": "3m", "31m": "3m",
    "-3m1": "-3m", "-31m": "-3m", "-62m": "-6m2", "m3": "m-3", "m3m": "m-3m",
}  # fmt: skip


def site_point_group(site_symmetry_symbol: str) -> str:
    """The point group of a site from spglib's oriented site-symmetry symbol (``"4m.m"`` -> ``"4mm"``).

    Unlike the Wyckoff letter, this does not depend on the choice of origin (NaCl's Na is 4a or
    4b depending on where the origin sits; both sites are m-3m), so the network can take it as input.
    Returns ``""`` for a symbol it does not recognise.
    """
    bare = site_symmetry_symbol.replace(".", "").strip()
    bare = _SITE_POINT_GROUP_ALIASES.get(bare, bare)
    return bare if bare in POINT_GROUPS else ""


def site_point_group_index(site_symmetry_symbol: str) -> int:
    """Index of a site's point group in :data:`POINT_GROUPS` (``len(POINT_GROUPS)`` if unrecognised)."""
    name = site_point_group(site_symmetry_symbol)
    return POINT_GROUPS.index(name) if name else len(POINT_GROUPS)


def crystal_system_index(name: str) -> int:
    """Index of a crystal system in :data:`CRYSTAL_SYSTEMS`."""
    return CRYSTAL_SYSTEMS.index(name)


def unique_orbit_names(report: SymmetryReport) -> list[str]:
    """Orbit labels made unique, in orbit order (two ``O 4c`` orbits become ``O 4c (1)`` and ``O 4c (2)``)."""
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
