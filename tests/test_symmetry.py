"""sen.symmetry: known space groups, Wyckoff orbits and tolerances of real crystals."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp
from pymatgen.util.testing import MatSciTest

from sen.errors import StructureError
from sen.symmetry import (
    CRYSTAL_SYSTEMS,
    POINT_GROUPS,
    SymmetryReport,
    analyze_symmetry,
    conventional_standard_structure,
    crystal_system_index,
    crystal_system_of,
    point_group_index,
    primitive_standard_structure,
)

# name -> (space group symbol, number, Hall symbol, point group, crystal system, orbit labels in atom order)
BUILT = {
    "Si": ("Fd-3m", 227, "F 4d 2 3 -1d", "m-3m", "cubic", ["Si 8a"]),
    "NaCl": ("Fm-3m", 225, "-F 4 2 3", "m-3m", "cubic", ["Na 4a", "Cl 4b"]),
    "Cu": ("Fm-3m", 225, "-F 4 2 3", "m-3m", "cubic", ["Cu 4a"]),
    "CsCl": ("Pm-3m", 221, "-P 4 2 3", "m-3m", "cubic", ["Cs 1a", "Cl 1b"]),
    "SrTiO3": ("Pm-3m", 221, "-P 4 2 3", "m-3m", "cubic", ["Sr 1a", "Ti 1b", "O 3c"]),
    "ZnO": ("P6_3mc", 186, "P 6c -2c", "6mm", "hexagonal", ["Zn 2b", "O 2b"]),
    "TiO2": ("P4_2/mnm", 136, "-P 4n 2n", "4/mmm", "tetragonal", ["Ti 2a", "O 4f"]),
    "Al2O3": ("R-3c", 167, '-R 3 2"c', "-3m", "trigonal", ["Al 12c", "O 18e"]),
}

# pymatgen's bundled structures: name -> (space group number, crystal system, orbit labels)
BUNDLED = {
    "Si": (227, "cubic", ["Si 8a"]),
    "SrTiO3": (221, "cubic", ["Sr 1b", "Ti 1a", "O 3d"]),  # this file puts Ti at the origin
    "CsCl": (221, "cubic", ["Cs 1a", "Cl 1b"]),
    "Graphite": (194, "hexagonal", ["C 2c", "C 2b"]),
    "NaFePO4": (62, "orthorhombic", ["Na 4a", "Fe 4c", "P 4c", "O 4c", "O 4c", "O 8d"]),
    "SiO2": (154, "trigonal", ["Si 3a", "O 6c"]),
    "VO2": (136, "tetragonal", ["O 4f", "V 2b"]),
    "K2O2": (64, "orthorhombic", ["K 8e", "O 8f"]),
    "TiO2": (12, "monoclinic", ["Ti 4i", "Ti 4i", "O 4i", "O 4i", "O 4i", "O 4i"]),
}


def orbit_labels(report: SymmetryReport) -> list[str]:
    return [orbit.label for orbit in report.orbits]


@pytest.mark.parametrize("name", sorted(BUILT))
def test_built_crystals_known_answers(crystals, name):
    symbol, number, hall, point_group, system, labels = BUILT[name]
    report = analyze_symmetry(crystals[name])
    assert (report.space_group_symbol, report.space_group_number) == (symbol, number)
    assert report.hall_symbol == hall
    assert report.point_group == point_group
    assert report.crystal_system == system
    assert orbit_labels(report) == labels


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_pymatgen_bundled_structures(name):
    number, system, labels = BUNDLED[name]
    report = analyze_symmetry(MatSciTest.get_structure(name))
    assert report.space_group_number == number
    assert report.crystal_system == system
    assert orbit_labels(report) == labels


def test_site_symmetry_symbols_and_orders(crystals):
    rutile = analyze_symmetry(crystals["TiO2"])
    ti, o = rutile.orbits
    assert (ti.site_symmetry, o.site_symmetry) == ("m.mm", "m.2m")
    corundum = analyze_symmetry(crystals["Al2O3"])
    assert [orbit.site_symmetry for orbit in corundum.orbits] == ["3.", ".2"]
    srtio3 = analyze_symmetry(crystals["SrTiO3"])
    assert list(srtio3.site_symmetry_symbols) == ["m-3m", "m-3m", "4/mm.m", "4/mm.m", "4/mm.m"]
    # |site-symmetry group|: m-3m has 48 elements, 4/mmm 16; 48 * 1 = 16 * 3 (orbit-stabiliser)
    assert list(srtio3.site_symmetry_order) == [48, 48, 16, 16, 16]
    si = analyze_symmetry(crystals["Si"])
    assert set(si.site_symmetry_order) == {24}  # -43m


@pytest.mark.parametrize("name", ["Si", "NaCl", "SrTiO3", "ZnO", "TiO2", "Al2O3"])
def test_orbits_partition_the_atoms(crystals, name):
    s = crystals[name]
    report = analyze_symmetry(s)
    members = sorted(i for orbit in report.orbits for i in orbit.atom_indices)
    assert members == list(range(len(s)))
    for orbit in report.orbits:
        assert [report.orbit_index[i] for i in orbit.atom_indices] == [orbit.index] * len(orbit.atom_indices)
        assert {s[i].specie.symbol for i in orbit.atom_indices} == {orbit.element}
        assert {report.wyckoff_letters[i] for i in orbit.atom_indices} == {orbit.wyckoff_letter}
        # orbit-stabiliser theorem inside this cell
        assert len(orbit.atom_indices) * report.site_symmetry_order[orbit.atom_indices[0]] == report.n_operations
    assert report.n_orbits == len(report.orbits) == int(report.orbit_index.max()) + 1
    assert len(report.orbit_labels) == len(s)


def test_multiplicity_is_the_international_tables_one_in_any_cell(crystals):
    nacl = crystals["NaCl"]
    primitive = primitive_standard_structure(nacl)
    supercell = nacl * (2, 1, 1)
    for s in (nacl, primitive, supercell):
        assert sorted(set(analyze_symmetry(s).orbit_labels)) == ["Cl 4b", "Na 4a"]
    assert analyze_symmetry(primitive).n_operations == 48
    assert analyze_symmetry(nacl).n_operations == 192


def test_standardised_cells_atom_counts(crystals):
    expected = {"Si": (2, 8), "NaCl": (2, 8), "Cu": (1, 4), "CsCl": (2, 2), "SrTiO3": (5, 5), "Al2O3": (10, 30)}
    for name, (n_primitive, n_conventional) in expected.items():
        assert len(primitive_standard_structure(crystals[name])) == n_primitive, name
        assert len(conventional_standard_structure(crystals[name])) == n_conventional, name
    # and back: the conventional cell of the primitive corundum cell is the hexagonal one
    conventional = conventional_standard_structure(primitive_standard_structure(crystals["Al2O3"]))
    assert analyze_symmetry(conventional).space_group_number == 167
    assert conventional.lattice.gamma == pytest.approx(120.0)


def _rotated(s: Structure, seed: int = 1) -> Structure:
    axis = np.random.default_rng(seed).normal(size=3)
    op = SymmOp.from_axis_angle_and_translation(axis, 37.0, translation_vec=(0.3, -1.2, 2.0))
    out = s.copy()
    out.apply_operation(op)
    return out


def _orbit_partition(report: SymmetryReport) -> set[tuple[int, ...]]:
    return {orbit.atom_indices for orbit in report.orbits}


def _invariants(report: SymmetryReport) -> list[tuple]:
    """Per-atom symmetry data that must not depend on the frame: element, multiplicity, site-group order."""
    return [(o.element, o.multiplicity, int(report.site_symmetry_order[o.atom_indices[0]])) for o in report.orbits]


@pytest.mark.parametrize("name", ["NaCl", "Si", "SrTiO3", "ZnO", "TiO2", "Al2O3"])
def test_orbits_are_independent_of_frame_and_atom_order(crystals, name):
    s = crystals[name]
    reference = analyze_symmetry(s)
    perm = np.random.default_rng(0).permutation(len(s))
    permuted = analyze_symmetry(Structure.from_sites([s[i] for i in perm]))
    new_index = np.argsort(perm)  # atom i of s is atom new_index[i] of the permuted structure
    assert {tuple(sorted(int(new_index[i]) for i in o)) for o in _orbit_partition(reference)} == _orbit_partition(
        permuted
    )
    for seed in range(4):
        moved = analyze_symmetry(_rotated(s, seed))
        assert moved.space_group_number == reference.space_group_number
        assert _orbit_partition(moved) == _orbit_partition(reference)
        assert _invariants(moved) == _invariants(reference)
        assert moved.site_symmetry_symbols == reference.site_symmetry_symbols


def test_wyckoff_letters_depend_on_the_origin_choice_within_a_wyckoff_set(crystals):
    # NaCl: either ion may sit at the origin, so spglib may call Na 4a or 4b (and Cl the other);
    # the letters are equivalent under the Euclidean normaliser. Multiplicity and site symmetry are not affected.
    seen = set()
    for seed in range(8):
        report = analyze_symmetry(_rotated(crystals["NaCl"], seed))
        seen.add(tuple(report.orbit_labels[:1] + report.orbit_labels[4:5]))
        assert set(report.site_symmetry_symbols) == {"m-3m"}
    assert seen <= {("Na 4a", "Cl 4b"), ("Na 4b", "Cl 4a")}


@pytest.mark.parametrize("name", ["Si", "NaCl", "SrTiO3", "ZnO", "TiO2", "Al2O3"])
@pytest.mark.parametrize("repeat", [(1, 1, 2), (2, 1, 3), (2, 2, 2)])
def test_orbits_are_the_same_in_supercells(crystals, name, repeat):
    # A 1x1x2 supercell of a cubic crystal has a tetragonal lattice; orbits must still be whole.
    s = crystals[name]
    reference = analyze_symmetry(s)
    report = analyze_symmetry(s * repeat)
    assert report.space_group_number == reference.space_group_number
    assert report.n_orbits == reference.n_orbits
    assert sorted(_invariants(report)) == sorted(_invariants(reference))
    n_cells = int(np.prod(repeat))
    assert sorted(np.bincount(report.orbit_index)) == sorted(n_cells * len(o.atom_indices) for o in reference.orbits)


def test_tolerance_decides_a_slightly_distorted_cubic_crystal():
    # CsCl stretched by 0.004 Å along c: cubic at a loose tolerance, tetragonal at a tight one
    s = Structure(Lattice.tetragonal(4.123, 4.127), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    loose = analyze_symmetry(s, symprec=0.01)
    tight = analyze_symmetry(s, symprec=1e-4)
    assert (loose.space_group_number, loose.crystal_system) == (221, "cubic")
    assert (tight.space_group_number, tight.crystal_system) == (123, "tetragonal")
    assert (loose.symprec, tight.symprec) == (0.01, 1e-4)


@pytest.mark.parametrize("name", ["Si", "NaCl", "SrTiO3", "TiO2"])
def test_rattled_crystals_lose_their_symmetry(crystals, name):
    s = crystals[name] * (1, 1, 2) if len(crystals[name]) < 8 else crystals[name].copy()
    rng = np.random.default_rng(7)
    directions = rng.normal(size=(len(s), 3))
    displacements = 0.05 * directions / np.linalg.norm(directions, axis=1, keepdims=True)  # 0.05 Å each
    rattled = Structure(s.lattice, s.species, s.cart_coords + displacements, coords_are_cartesian=True)
    report = analyze_symmetry(rattled, symprec=1e-3)
    assert (report.space_group_number, report.crystal_system, report.point_group) == (1, "triclinic", "1")
    assert report.n_orbits == len(s)  # every atom is its own orbit
    # a tolerance larger than the displacements finds the original group again
    assert analyze_symmetry(rattled, symprec=0.2).space_group_number == analyze_symmetry(s).space_group_number


def test_summary_names_group_and_orbits(crystals):
    text = analyze_symmetry(crystals["TiO2"]).summary()
    assert "P4_2/mnm (No. 136)" in text and "Hall -P 4n 2n" in text
    assert "Ti 2a" in text and "O 4f" in text and "tetragonal" in text


def test_bad_tolerances_and_disorder_raise_structure_error(crystals):
    for symprec in (0.0, -0.1, 2.0):
        with pytest.raises(StructureError, match="tolerance"):
            analyze_symmetry(crystals["Cu"], symprec=symprec)
    with pytest.raises(StructureError, match="angle tolerance"):
        analyze_symmetry(crystals["Cu"], angle_tolerance=45.0)
    alloy = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    with pytest.raises(StructureError, match="ordered"):
        analyze_symmetry(alloy)


def test_index_helpers():
    boundaries = {1: "triclinic", 2: "triclinic", 3: "monoclinic", 15: "monoclinic", 16: "orthorhombic",
                  74: "orthorhombic", 75: "tetragonal", 142: "tetragonal", 143: "trigonal", 167: "trigonal",
                  168: "hexagonal", 194: "hexagonal", 195: "cubic", 230: "cubic"}  # fmt: skip
    for number, system in boundaries.items():
        assert crystal_system_of(number) == system
    with pytest.raises(ValueError):
        crystal_system_of(231)
    assert len(POINT_GROUPS) == 32 and len(set(POINT_GROUPS)) == 32
    assert point_group_index("m-3m") == 31 and point_group_index("1") == 0 and point_group_index("nonsense") == 0
    assert [crystal_system_index(c) for c in CRYSTAL_SYSTEMS] == list(range(7))
