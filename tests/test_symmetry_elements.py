"""Symmetry elements (sen/symmetry_elements.py) against International Tables, and their 3D shapes
(app/viewer.py: symmetry_element_shapes, add_symmetry_elements)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import viewer  # noqa: E402
from sen.errors import StructureError  # noqa: E402
from sen.io import read_structure  # noqa: E402
from sen.symmetry_elements import (  # noqa: E402
    axis_segments,
    cell_symmetry_elements,
    centre_copies,
    plane_polygons,
    symmetry_elements,
)

EXAMPLES = ROOT / "assets" / "examples"


def lines(axes) -> set[tuple[float, float]]:
    """Where axes along a lattice vector cross the cell's face (the two other coordinates, mod 1)."""
    out = set()
    for a in axes:
        k = int(np.argmax(np.abs(a.direction)))
        out.add(tuple(round(float(x) % 1.0, 4) for i, x in enumerate(a.point) if i != k))
    return out


@pytest.fixture(scope="module")
def pm3m(crystals):
    return symmetry_elements(crystals["SrTiO3"])


def test_pm3m_four_fold_axes_mirrors_and_inversion_centres(pm3m):
    assert (pm3m.space_group_symbol, pm3m.space_group_number) == ("Pm-3m", 221)
    for direction in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        four = pm3m.axes_along(direction, "4")
        assert lines(four) == {(0.0, 0.0), (0.5, 0.5)}  # through the corners and the face centres
        two = pm3m.axes_along(direction, "2")
        assert lines(two) == {(0.0, 0.5), (0.5, 0.0)}  # the edge-centre lines carry only 2-fold axes
        mirrors = pm3m.planes_normal_to(direction, "m")
        assert sorted(p.offset for p in mirrors) == [0.0, 0.5]
    for diagonal in ((1, 1, 1), (1, -1, 1), (1, 1, -1), (1, -1, -1)):
        threes = pm3m.axes_along(diagonal, "3")
        assert len(threes) == 1
        # the 3-fold rotation axis is the body diagonal itself: from a corner of the cell to the opposite one
        segments = axis_segments(threes[0])
        assert len(segments) == 1 and set(segments[0][0] + segments[0][1]) <= {0.0, 1.0}
    centres = {c.point for c in pm3m.centres}
    assert len(centres) == 8 and (0.0, 0.0, 0.0) in centres and (0.5, 0.5, 0.5) in centres
    assert not pm3m.axes_along((0, 0, 1), "4_2") and not [a for a in pm3m.axes if a.symbol == "6"]


def test_p63mmc_has_a_six_three_screw_axis_along_c(crystals):
    mg = Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.209, 5.211), ["Mg"], [[1 / 3, 2 / 3, 0.25]])
    elements = symmetry_elements(mg)
    assert elements.space_group_number == 194
    screws = elements.axes_along((0, 0, 1), "6_3")
    assert len(screws) == 1 and lines(screws) == {(0.0, 0.0)}
    assert not elements.axes_along((0, 0, 1), "6")  # no pure six-fold rotation in P6_3/mmc
    threes = {tuple(round(x, 3) for x in p) for p in lines(elements.axes_along((0, 0, 1), "3"))}
    assert threes == {(0.333, 0.667), (0.667, 0.333)}
    assert sorted(p.offset for p in elements.planes_normal_to((0, 0, 1), "m")) == [0.25, 0.75]
    assert len(elements.centres) == 8


def test_p21c_screw_along_b_and_c_glide_perpendicular_to_b():
    zro2 = read_structure(EXAMPLES / "zro2_baddeleyite.cif")
    elements = symmetry_elements(zro2)
    assert (elements.space_group_symbol, elements.space_group_number) == ("P2_1/c", 14)
    screws = elements.axes_along((0, 1, 0), "2_1")
    assert lines(screws) == {(0.0, 0.25), (0.0, 0.75), (0.5, 0.25), (0.5, 0.75)}  # (x, z)
    glides = elements.planes_normal_to((0, 1, 0))
    assert {p.symbol for p in glides} == {"c"}
    assert sorted(p.offset for p in glides) == [0.25, 0.75]
    assert all(p.glide == (0.0, 0.0, 0.5) for p in glides)
    assert len(elements.centres) == 8
    assert elements.counts() == {"2_1": 4, "c": 2, "-1": 8}  # nothing else: no rotation axis, no mirror


def test_fd3m_origin_choice_2_puts_inversion_centres_between_the_atoms():
    si = read_structure(EXAMPLES / "si_diamond.cif")
    elements = symmetry_elements(si)
    assert elements.cell.endswith("origin choice 2") and elements.hall_number == 526
    centres = np.array([c.point for c in elements.centres])
    assert len(centres) == 32  # 8 per primitive cell x 4 lattice points (16c + 16d)
    assert (0.0, 0.0, 0.0) in {c.point for c in elements.centres}
    # the atoms of the same cell (8a at 1/8 1/8 1/8 in origin choice 2) are never on a centre
    from sen.symmetry_elements import _dataset

    std = _dataset((si.lattice.matrix, si.frac_coords, si.atomic_numbers), 0.01, 5.0, 526)
    atoms = np.mod(std.std_positions, 1.0)
    assert np.allclose(np.sort(np.abs(atoms - np.round(atoms * 4) / 4).max(1)), 0.125, atol=1e-4)
    diff = centres[:, None, :] - atoms[None, :, :]
    diff -= np.round(diff)
    assert np.abs(diff).max(2).min() > 0.1
    first = symmetry_elements(si, origin_choice=1)
    assert first.hall_number == 525 and (0.0, 0.0, 0.0) not in {c.point for c in first.centres}
    assert len(first.centres) == 32
    assert {"4_1", "4_3", "d"} <= set(elements.counts())


@pytest.mark.parametrize("name", ["SrTiO3", "ZnO", "TiO2", "Al2O3"])
def test_exhaustive_translations_find_no_more_elements(crystals, name):
    structure = crystals[name]
    quick = symmetry_elements(structure)
    from sen.symmetry_elements import _dataset, elements_from_operations

    ds = _dataset((quick.lattice, *_std_cell(structure)), 0.01, 5.0, quick.hall_number)
    full = elements_from_operations(ds.rotations, ds.translations, quick.lattice, exhaustive=True)
    assert quick.counts() == full.counts()
    assert _classes(quick) == _classes(full)


def _classes(elements):
    """Each element as a class modulo lattice translations (points on an axis are arbitrary)."""
    from sen.symmetry_elements import _line_key, _point_key

    axes = {(a.symbol, a.direction, _point_key(np.array(a.point)) if a.rotoinversion else
             _line_key(np.array(a.point), np.array(a.direction, float))) for a in elements.axes}  # fmt: skip
    return axes, set(elements.planes), {c.point for c in elements.centres}


def _std_cell(structure):
    from sen.symmetry_elements import _dataset

    ds = _dataset((structure.lattice.matrix, structure.frac_coords, structure.atomic_numbers), 0.01, 5.0)
    return ds.std_positions, ds.std_types


def test_inversion_centres_are_eight_per_lattice_point(crystals):
    for name, lattice_points in (("NaCl", 4), ("TiO2", 1), ("Al2O3", 3), ("Si", 4)):
        assert len(symmetry_elements(crystals[name]).centres) == 8 * lattice_points, name
    assert symmetry_elements(crystals["ZnO"]).centres == ()  # P6_3mc is polar: no centre


def test_cell_as_given_follows_its_origin(crystals):
    shifted = crystals["CsCl"].copy()
    shifted.translate_sites(range(len(shifted)), [0.1, 0.2, 0.3])
    elements = cell_symmetry_elements(shifted)
    assert elements.cell == "cell as given" and elements.space_group_number == 221
    assert (0.1, 0.2, 0.3) in {c.point for c in elements.centres}
    assert (0.0, 0.0, 0.0) not in {c.point for c in elements.centres}
    assert np.allclose(elements.lattice, shifted.lattice.matrix)


def test_drawing_pieces_stay_inside_the_cell(pm3m):
    mirror = next(p for p in pm3m.planes_normal_to((1, 0, 0), "m") if p.offset == 0.0)
    polygons = plane_polygons(mirror)
    assert len(polygons) == 2 and all(len(p) == 4 for p in polygons)  # the faces x = 0 and x = 1
    assert {poly[0][0] for poly in polygons} == {0.0, 1.0}
    corner = next(c for c in pm3m.centres if c.point == (0.0, 0.0, 0.0))
    assert len(centre_copies(corner)) == 8  # all eight corners
    for axis in pm3m.axes:
        for start, end in axis_segments(axis):
            assert min(start + end) >= 0 and max(start + end) <= 1


def test_refuses_a_bad_tolerance(crystals):
    with pytest.raises(StructureError, match="between 0 and 1"):
        symmetry_elements(crystals["Cu"], symprec=2.0)


# ---------------------------------------------------------------------------- 3D shapes


def test_shapes_have_colours_by_order_and_a_legend(pm3m):
    shapes = viewer.symmetry_element_shapes(pm3m)
    colours = {c[3] for c in shapes.cylinders}
    assert viewer.AXIS_COLOURS[4] in colours and viewer.AXIS_COLOURS[3] in colours
    assert {label for label, _ in shapes.legend} >= {"4-fold axis", "3-fold axis", "mirror plane", "inversion centre"}
    assert len(shapes.spheres) == 27  # 8 centres with their copies on faces, edges and corners: 3 x 3 x 3
    only_axes = viewer.symmetry_element_shapes(pm3m, kinds=("rotation axes",))
    assert not only_axes.planes and not only_axes.spheres and only_axes.cylinders
    assert all(not dashed for *_, dashed in only_axes.cylinders)
    bigger = viewer.symmetry_element_shapes(pm3m, supercell=(2, 1, 1))
    assert len(bigger.spheres) == 2 * len(shapes.spheres)
    capped = viewer.symmetry_element_shapes(pm3m, max_shapes=60)
    assert capped.n_shapes <= 60 and capped.left_out > 0


def test_screw_axes_are_dashed_and_glides_have_their_own_colour():
    zro2 = read_structure(EXAMPLES / "zro2_baddeleyite.cif")
    shapes = viewer.symmetry_element_shapes(cell_symmetry_elements(zro2))
    assert shapes.cylinders and all(dashed for *_, dashed in shapes.cylinders)
    assert {c for _, c in shapes.planes} == {viewer.GLIDE_COLOUR}


def _scene(structure):
    return viewer.build_viewer_scene(structure, [viewer.colour_by_element(structure)], name="test")


def test_added_elements_reach_the_view_as_numbers_only(crystals):
    structure = crystals["SrTiO3"]
    elements = cell_symmetry_elements(structure)
    shapes = viewer.symmetry_element_shapes(elements)
    scene = _scene(structure)
    payload = viewer.add_symmetry_elements(scene, shapes)["elements"]
    assert scene["elements"] is None  # the scene given is not changed
    assert len(payload["c"]) == len(shapes.cylinders) and len(payload["s"]) == len(shapes.spheres)
    assert all(isinstance(x, int | float) for row in payload["c"] for x in row)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in payload["colours"])
    assert payload["n"] == shapes.n_shapes and ["4-fold axis", viewer.AXIS_COLOURS[4]] in payload["legend"]
    json.dumps(payload, allow_nan=False)
    script = (viewer.COMPONENT_DIR / "viewer.js").read_text()
    assert 'er.appendChild(legendRow("Symmetry elements: ", scene.elements.legend))' in script
    assert 'body.setAttribute("data-symmetry-elements", String(scene.elements.n))' in script


def test_bad_colours_or_numbers_never_reach_the_view(crystals):
    structure = crystals["SrTiO3"]
    shapes = viewer.symmetry_element_shapes(cell_symmetry_elements(structure))
    evil = viewer.ElementShapes(shapes.cylinders[:1], (), ((np.zeros(3), 0.1, "red;}</script>"),), ())
    with pytest.raises(ValueError, match="not a #rrggbb colour"):
        viewer.add_symmetry_elements(_scene(structure), evil)
    nan = viewer.ElementShapes(((np.array([np.nan, 0, 0]), np.ones(3), 0.05, "#123456", False),), (), (), ())
    with pytest.raises(ValueError, match="finite"):
        viewer.add_symmetry_elements(_scene(structure), nan)
