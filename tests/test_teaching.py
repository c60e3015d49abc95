"""Teaching operations (sen/teaching.py) on real crystals: distortions, strain, rattle, substitution
and the group-subgroup steps they cause."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from sen.errors import StructureError
from sen.io import read_structure
from sen.symmetry import analyze_symmetry
from sen.teaching import (
    MAX_DISPLACEMENT,
    Edits,
    apply_edits,
    compare_symmetry,
    displace_orbit,
    rattle,
    strain_cell,
    substitute,
    substitute_with_scaling,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
TRAINING = json.loads((ROOT / "sen" / "models" / "sen_mp" / "metrics.json").read_text())["training_elements"]


@pytest.fixture(scope="module")
def srtio3():
    return read_structure(EXAMPLES / "srtio3_perovskite.cif")


def snapshot(structure: Structure):
    return structure.lattice.matrix.copy(), structure.frac_coords.copy(), [s.specie.symbol for s in structure]


def assert_unchanged(structure: Structure, before) -> None:
    lattice, frac, species = before
    assert np.array_equal(structure.lattice.matrix, lattice) and np.array_equal(structure.frac_coords, frac)
    assert [s.specie.symbol for s in structure] == species


def test_ti_along_c_gives_p4mm_index_6_and_splits_o(srtio3):
    before = snapshot(srtio3)
    moved = displace_orbit(srtio3, "Ti", [0, 0, 1], 0.1)
    assert_unchanged(srtio3, before)  # the input is never changed
    ti = [i for i, s in enumerate(srtio3) if s.specie.symbol == "Ti"][0]
    shift = (moved.frac_coords[ti] - srtio3.frac_coords[ti]) @ srtio3.lattice.matrix
    assert np.allclose(shift, [0, 0, 0.1], atol=1e-9)
    c = compare_symmetry(srtio3, moved)
    assert (c.after.space_group_symbol, c.after.space_group_number) == ("P4mm", 99)
    assert c.step == "Pm-3m (221) -> P4mm (99), index 6"
    assert c.index == 6 and c.relation == "t" and c.is_subgroup is True
    assert [str(s) for s in c.split_orbits] == ["O 3c -> O 1b + O 2c"]
    o_split = c.split_orbits[0]
    assert sorted(len(a) for a in o_split.atoms) == [1, 2]
    text = c.explanation("Moving Ti")
    assert (
        "P4mm" in text and "index 6" in text and "O 3c -> O 1b + O 2c" in text and "translations are all kept" in text
    )


def test_ti_along_body_diagonal_gives_r3m(srtio3):
    c = compare_symmetry(srtio3, displace_orbit(srtio3, "Ti 1b", [1, 1, 1], 0.1))
    assert c.after.space_group_number == 160 and c.after.space_group_symbol == "R3m"
    assert c.index == 8  # m-3m (48) / 3m (6); the rhombohedral primitive cell is the cubic cell
    assert not c.split_orbits  # the three O stay equivalent under the 3-fold axis


def test_displacement_in_cartesian_terms_and_below_the_tolerance(srtio3):
    moved = displace_orbit(srtio3, 1, [0, 0, 2.0], 0.1, cartesian=True)
    assert compare_symmetry(srtio3, moved).after.space_group_number == 99
    tiny = compare_symmetry(srtio3, displace_orbit(srtio3, "Ti", [0, 0, 1], 0.005))
    assert tiny.relation == "same" and tiny.index == 1 and "smaller than the tolerance" in tiny.explanation()


def test_strain_of_si_along_c_gives_i41amd(crystals):
    si = crystals["Si"]
    strained = strain_cell(si, "c", 2)
    assert strained.lattice.c == pytest.approx(si.lattice.c * 1.02) and strained.lattice.a == pytest.approx(
        si.lattice.a
    )
    c = compare_symmetry(si, strained)
    assert (c.after.space_group_symbol, c.after.space_group_number) == ("I4_1/amd", 141)
    assert c.index == 3 and c.relation == "t"
    sheared = strain_cell(si, "ab", 2)
    assert sheared.lattice.gamma == pytest.approx(90 - np.degrees(0.02), abs=0.01)
    assert compare_symmetry(si, sheared).after.space_group_symbol == "Imma"


def test_rattle_is_reproducible_and_breaks_everything(srtio3):
    a, b = rattle(srtio3, 0.2, seed=3), rattle(srtio3, 0.2, seed=3)
    assert np.array_equal(a.cart_coords, b.cart_coords)
    assert not np.allclose(a.cart_coords, rattle(srtio3, 0.2, seed=4).cart_coords)
    diff = a.frac_coords - srtio3.frac_coords
    moved = np.linalg.norm((diff - np.round(diff)) @ srtio3.lattice.matrix, axis=1)  # atoms are wrapped into the cell
    assert moved.max() <= 0.2 + 1e-9 and moved.min() > 0
    c = compare_symmetry(srtio3, a)
    assert c.after.space_group_number == 1 and c.index == 48
    assert [str(s) for s in c.split_orbits] == ["O 3c -> O 1a (1) + O 1a (2) + O 1a (3)"]


def test_nacl_na_to_k_gives_kcl_with_a_larger_cell(crystals):
    nacl = read_structure(EXAMPLES / "nacl_rocksalt.cif")
    kcl, scaling = substitute_with_scaling(nacl, "Na", "K", allowed_elements=TRAINING)
    assert kcl.composition.reduced_formula == "KCl"
    assert scaling.radii.startswith("ionic") and (scaling.old_radius, scaling.new_radius) == (1.16, 1.52)
    assert kcl.volume == pytest.approx(nacl.volume * scaling.factor)
    # bond-length rule: a = 5.64 x (2.82 + 0.36) / 2.82 = 6.36 Å; KCl is measured at 6.29 Å
    assert kcl.lattice.a == pytest.approx(6.36, abs=0.01)
    assert abs(kcl.lattice.a - 6.29) / 6.29 < 0.02
    assert compare_symmetry(nacl, kcl).relation == "same"
    kept = substitute(nacl, "Na", "K", volume="keep")
    assert kept.volume == pytest.approx(nacl.volume)
    assert substitute(nacl, "Na", "K", volume=1.1).volume == pytest.approx(1.1 * nacl.volume)
    cu_ag, metallic = substitute_with_scaling(crystals["Cu"], "Cu", "Ag")
    assert metallic.radii == "metallic" and abs(cu_ag.lattice.a - 4.086) / 4.086 < 0.01  # Ag: 4.086 Å


def test_substitution_refuses_unseen_and_unknown_elements(crystals):
    nacl = crystals["NaCl"]
    assert "Fr" not in TRAINING
    with pytest.raises(StructureError, match="Fr never appeared in the model's training data"):
        substitute(nacl, "Na", "Fr", allowed_elements=TRAINING)
    with pytest.raises(StructureError, match="not a chemical element"):
        substitute(nacl, "Na", "Xx")
    with pytest.raises(StructureError, match="there is no Mg in this crystal"):
        substitute(nacl, "Mg", "K")
    with pytest.raises(StructureError, match="between 0.5 and 2"):
        substitute(nacl, "Na", "K", volume=5)


def test_one_orbit_of_an_element_can_be_substituted():
    lifepo4 = read_structure(EXAMPLES / "lifepo4_olivine.cif")
    report = analyze_symmetry(lifepo4)
    o_orbits = [o for o in report.orbits if o.element == "O"]
    assert len(o_orbits) == 3
    general = next(o for o in o_orbits if o.multiplicity == 8)
    changed = substitute(lifepo4, "O", "S", orbit=general.index, volume="keep")
    assert [changed[i].specie.symbol for i in general.atom_indices] == ["S"] * 8
    assert sum(s.specie.symbol == "O" for s in changed) == 8  # the two 4c orbits stay O
    c = compare_symmetry(lifepo4, changed)
    assert c.relation == "same" and c.after.space_group_symbol == "Pnma"  # a whole orbit keeps every operation


def test_bounds_and_bad_input_are_refused(srtio3):
    with pytest.raises(StructureError, match="between -2 and 2 Å"):
        displace_orbit(srtio3, "Ti", [0, 0, 1], MAX_DISPLACEMENT + 0.1)
    with pytest.raises(StructureError, match="between -30 and 30 %"):
        strain_cell(srtio3, "c", 31)
    with pytest.raises(StructureError, match="unknown strain"):
        strain_cell(srtio3, "z", 1)
    with pytest.raises(StructureError, match="between 0 and 0.5 Å"):
        rattle(srtio3, 0.6)
    with pytest.raises(StructureError, match="direction is zero"):
        displace_orbit(srtio3, "Ti", [0, 0, 0], 0.1)
    with pytest.raises(StructureError, match="no orbit 'Zn'"):
        displace_orbit(srtio3, "Zn", [0, 0, 1], 0.1)
    with pytest.raises(StructureError, match="only 0.0"):  # Ti pushed onto the O above it: 0.5 Å rule
        displace_orbit(srtio3, "Ti", [0, 0, 1], 1.95)


def test_apply_edits_in_order_with_a_description(srtio3):
    edits = Edits(substitute=("Sr", "Ba", "keep"), strain=("c", 1.0), displace=("Ti", (0.0, 0.0, 1.0), 0.1))
    result = apply_edits(srtio3, edits, TRAINING)
    assert result.structure.composition.reduced_formula == "BaTiO3"
    assert result.structure.lattice.c == pytest.approx(srtio3.lattice.c * 1.01)
    assert result.steps == (
        "every Sr replaced by Ba (cell volume kept)",
        "cell strained +1 % (uniaxial along c)",
        "Ti 1b moved 0.1 Å along [0 0 1]",
    )
    assert compare_symmetry(srtio3, result.structure).after.space_group_number == 99
    with pytest.raises(StructureError, match="Fr never appeared"):
        apply_edits(srtio3, Edits(substitute=("Sr", "Fr", "keep")), TRAINING)


def test_klassengleiche_index_counts_lost_translations(crystals):
    nacl = crystals["NaCl"]
    doubled = nacl.copy()
    doubled.make_supercell([2, 1, 1])
    one_na = doubled.copy()
    one_na.replace(0, "K")  # one Na in the 2x1x1 cell: translations lost, and the point group drops too
    c = compare_symmetry(doubled, one_na)
    assert c.translation_index == 8 and c.point_group_index == 48 / 16  # P4/mmm: 16 operations
    assert c.after.point_group == "4/mmm" and c.index == 24 and c.relation == "general"
    # klassengleiche: an ordered body-centred cell, I4/mmm -> P4/mmm, keeps the point group
    cu2 = Structure(Lattice.tetragonal(2.8, 3.4), ["Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    au = cu2.copy()
    au.replace(1, "Au")
    k = compare_symmetry(cu2, au)  # I4/mmm -> P4/mmm: same point group, half of the translations
    assert (k.before.space_group_number, k.after.space_group_number) == (139, 123)
    assert k.relation == "k" and k.index == 2
    assert "2 times larger" in k.explanation()


def test_not_a_subgroup_is_said_so(srtio3):
    distorted = displace_orbit(srtio3, "Ti", [0, 0, 1], 0.1)
    c = compare_symmetry(distorted, srtio3)  # "after" is more symmetric than "before"
    assert c.index is None and c.relation == "none" and "not a subgroup" in c.step
    assert "more symmetric" in c.explanation()
