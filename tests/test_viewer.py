"""The 3D view (app/viewer.py and app/viewer_component/): geometry, colours, the scene, local 3Dmol.js and
untrusted strings (only ever text)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import viewer  # noqa: E402
from app.atom_details import TABLE_KEY, atom_rows, selected_site, site_details  # noqa: E402
from app.viewer import (  # noqa: E402
    CDN_3DMOL_URL,
    COMPONENT_DIR,
    LOCAL_3DMOL_URL,
    AtomColouring,
    SiteDetails,
    build_viewer_scene,
    cell_atoms,
    colour_by_capsule,
    colour_by_element,
    colour_by_orbit,
)
from sen.io import read_structure  # noqa: E402
from sen.predict import DEFAULT_MODEL, MODELS_DIR  # noqa: E402
from sen.symmetry import analyze_symmetry, unique_orbit_names  # noqa: E402

pytestmark = pytest.mark.timeout(120)
SCRIPT = "</script><script>window.__sen_pwned=1;alert(1)</script>"


def rocksalt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def model_atoms(scene: dict) -> list[str]:
    """The XYZ block handed to 3Dmol, one line per drawn atom."""
    return scene["xyz"].split("\n")[2:-1]


def scene_of(at: AppTest, index: int = 0) -> dict:
    """The scene an app run handed to its (``index``-th) 3D view."""
    return json.loads(at.get("component_instance")[index].proto.json_args)["scene"]


def label_texts(scene: dict) -> list[str]:
    return [text for text, _ in scene["labels"]]


VIEW_SCRIPT = (COMPONENT_DIR / "viewer.js").read_text()
VIEW_PAGE = (COMPONENT_DIR / "index.html").read_text()


def test_conventional_rocksalt_is_drawn_as_the_27_atom_cube():
    parents, cart = cell_atoms(rocksalt())
    assert len(parents) == 27 and cart.shape == (27, 3)
    # the Na at the origin is drawn on all 8 corners, the Cl at (1/2, 0, 0) on 4 edges
    assert parents.count(0) == 8
    assert sorted(parents.count(i) for i in range(8)) == [1, 2, 2, 2, 4, 4, 4, 8]
    assert cart.min() == pytest.approx(0.0) and cart.max() == pytest.approx(5.64)


def test_supercell_repeats_along_each_axis():
    s = rocksalt()
    parents, cart = cell_atoms(s, (2, 1, 3))
    # rock salt's atoms sit on a simple-cubic grid of step a/2: (2*2+1) x (1*2+1) x (3*2+1) points
    assert len(parents) == 5 * 3 * 7
    assert cart[:, 0].max() == pytest.approx(2 * 5.64) and cart[:, 2].max() == pytest.approx(3 * 5.64)


def test_scene_uses_local_3dmol_and_draws_every_atom_in_its_colour():
    s = rocksalt()
    scene = build_viewer_scene(s, [colour_by_element(s)], js_url=LOCAL_3DMOL_URL, name="NaCl")
    assert scene["js"] == LOCAL_3DMOL_URL and "http" not in json.dumps(scene)
    atoms = model_atoms(scene)
    assert len(atoms) == 27 and {a.split()[0] for a in atoms} == {"Na", "Cl"}
    na, cl = viewer.element_colour("Na"), viewer.element_colour("Cl")
    (view,) = scene["views"]
    assert na != cl and {colour for _, colour, _ in view["styles"]} == {na, cl}
    assert sorted(i for indices, _, _ in view["styles"] for i in indices) == list(range(27))  # every atom once
    assert view["legend"] == [["Na", na], ["Cl", cl]]
    assert len(scene["cell"]) == 12 and [a for a, _ in scene["axes"]] == ["a", "b", "c"]  # the cell's edges
    assert scene["name"] == "NaCl" and scene["details"] is None and scene["elements"] is None
    assert build_viewer_scene(s, [colour_by_element(s)], js_url=LOCAL_3DMOL_URL, name="NaCl") == scene
    json.dumps(scene, allow_nan=False)  # plain JSON, finite numbers


def test_the_view_draws_in_place_and_keeps_the_camera_of_the_same_crystal():
    s = rocksalt()
    one = build_viewer_scene(s, [colour_by_element(s)], name="NaCl")
    strained = s.copy()
    strained.apply_strain([0, 0, 0.02])
    two = build_viewer_scene(strained, [colour_by_element(strained)], name="NaCl")
    assert one["camera"] == two["camera"] and one["xyz"] != two["xyz"]  # same crystal, changed: keep the view
    assert build_viewer_scene(s, [colour_by_element(s)], name="NaCl", supercell=(2, 1, 1))["camera"] != one["camera"]
    assert build_viewer_scene(s, [colour_by_element(s)], name="x", camera="mine")["camera"] == "mine"
    # the view's script redraws the viewers it has and makes new ones only for a new layout
    assert "v.removeAllModels();" in VIEW_SCRIPT and "state.layout !== layout" in VIEW_SCRIPT
    assert "state.camera === scene.camera ? views[0].getView() : null" in VIEW_SCRIPT
    assert "antialias: false" in VIEW_SCRIPT


def test_side_by_side_gives_two_linked_views_with_their_own_colours():
    s = rocksalt()
    report = analyze_symmetry(s)
    orbits = colour_by_orbit(report.orbit_index, [o.label for o in report.orbits])
    capsules = colour_by_capsule([0, 0, 0, 0, 5, 5, 5, 5], 8)
    scene = build_viewer_scene(s, [orbits, capsules], js_url=LOCAL_3DMOL_URL)
    assert [v["title"] for v in scene["views"]] == ["Wyckoff orbit", "Dominant capsule"]
    assert "createViewerGrid(el, { rows: 1, cols: n, control_all: true }" in VIEW_SCRIPT
    legends = [label for v in scene["views"] for label, _ in v["legend"]]
    assert "Na 4a" in legends and "Cl 4b" in legends and "capsule 5" in legends and "capsule 1" not in legends
    assert capsules.colours[0] == viewer.capsule_colour(0) != capsules.colours[4]


def test_user_strings_are_only_ever_text():
    s = rocksalt()
    colouring = AtomColouring("Element", colour_by_element(s).colours, ((SCRIPT, "#ff0000"),))
    scene = build_viewer_scene(s, [colouring], atom_labels=[SCRIPT] * len(s), js_url=LOCAL_3DMOL_URL, name=SCRIPT)
    assert scene["name"] == SCRIPT and scene["views"][0]["legend"] == [[SCRIPT, "#ff0000"]]
    assert set(label_texts(scene)) == {SCRIPT}  # data, kept as it is: the view never makes it markup
    # the view's page and script: strings become text nodes, textContent or 3Dmol label text (canvas)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(",
                 "setTimeout(\"", "srcdoc"):  # fmt: skip
        assert sink not in VIEW_SCRIPT and sink not in VIEW_PAGE
    assert "createTextNode(label)" in VIEW_SCRIPT and "t.textContent = view.title" in VIEW_SCRIPT
    assert 'setAttribute("data-crystal", scene.name)' in VIEW_SCRIPT  # an attribute value: never parsed
    # colours are checked again where they become CSS or 3Dmol colours: #rrggbb or an error
    assert "HEX.test(c)" in VIEW_SCRIPT and "d.colours.map(colour)" in VIEW_SCRIPT
    backgrounds = re.findall(r"\.background = (\S+)", VIEW_SCRIPT)
    assert backgrounds and all(b.startswith("colour(") for b in backgrounds)
    assert "sphere: { color: colour(s[1])" in VIEW_SCRIPT
    assert "event.source !== window.parent" in VIEW_SCRIPT  # scenes only from the page that holds the view
    assert VIEW_PAGE.count("<script") == 1 and '<script src="viewer.js"></script>' in VIEW_PAGE


def test_bad_colours_and_counts_are_refused():
    s = rocksalt()
    with pytest.raises(ValueError, match="colour"):
        build_viewer_scene(s, [AtomColouring("x", ("red",) * len(s), ())])
    with pytest.raises(ValueError, match="colour"):
        build_viewer_scene(s, [AtomColouring("x", colour_by_element(s).colours, (("x", "url(evil)"),))])
    with pytest.raises(ValueError, match="colours for 8 atoms"):
        build_viewer_scene(s, [AtomColouring("x", ("#ff0000",), ())])
    with pytest.raises(ValueError, match="too many"):
        big = rocksalt() * (4, 4, 4)
        build_viewer_scene(big, [colour_by_element(big)], supercell=(3, 3, 3))


def test_script_url_falls_back_to_the_cdn(monkeypatch, tmp_path):
    monkeypatch.setattr(viewer, "LOCAL_3DMOL_FILE", tmp_path / "missing.js")
    assert not viewer.local_script_available()
    assert viewer.script_url() == CDN_3DMOL_URL
    js = tmp_path / "3Dmol-min.js"
    js.write_text("/* 3Dmol */")
    monkeypatch.setattr(viewer, "LOCAL_3DMOL_FILE", js)
    assert viewer.script_url() == LOCAL_3DMOL_URL
    package = json.loads((ROOT / "package.json").read_text())
    assert f"3dmol@{package['dependencies']['3dmol']}/" in CDN_3DMOL_URL  # the version npm installs


def _render_app(root: str):
    import sys

    import streamlit as st
    from pymatgen.core import Lattice, Structure

    sys.path.insert(0, root)
    from app.viewer import build_viewer_scene, colour_by_element, render_viewer

    s = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])
    render_viewer(build_viewer_scene(s, [colour_by_element(s)], name="Cu"), 300)
    st.caption("after")


def test_render_viewer_hands_the_scene_to_the_view():
    at = AppTest.from_function(_render_app, args=(str(ROOT),), default_timeout=60)
    at.run()
    assert not at.exception
    (view,) = at.get("component_instance")
    assert view.proto.component_name.endswith("crystal_view")
    args = json.loads(view.proto.json_args)
    assert args["scene"]["name"] == "Cu" and args["height"] == 300 and len(model_atoms(args["scene"])) == 8
    assert at.caption[0].value == "after"


def test_missing_local_3dmol_is_announced_and_the_cdn_used(monkeypatch, tmp_path):
    monkeypatch.setattr(viewer, "LOCAL_3DMOL_FILE", tmp_path / "missing.js")
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert any("3Dmol.js is not installed" in w.value for w in at.warning)
    assert scene_of(at)["js"] == CDN_3DMOL_URL


def test_labels_go_on_every_drawn_atom_and_thin_out_for_large_supercells():
    s = rocksalt()
    names = [f"{site.specie.symbol} site" for site in s]
    parents, cart = cell_atoms(s)
    sites = viewer.label_sites(s, parents, cart, (1, 1, 1), names)
    assert len(sites) == 27  # the 8 corners of the Na at the origin included
    assert [text for text, _ in sites].count("Na site") == 14 and [text for text, _ in sites].count("Cl site") == 13
    assert all(position.tolist() == drawn.tolist() for (_, position), drawn in zip(sites, cart, strict=True))
    parents, cart = cell_atoms(s, (3, 3, 3))
    assert not viewer.labels_every_atom(len(parents))  # 7 x 7 x 7 = 343 atoms drawn
    sites = viewer.label_sites(s, parents, cart, (3, 3, 3), names)
    assert len(sites) == 27 * 2  # one per label and cell
    scene = build_viewer_scene(s, [colour_by_element(s)], supercell=(3, 3, 3), atom_labels=names)
    assert label_texts(scene).count("Na site") == 27 and label_texts(scene).count("Cl site") == 27


# ---------------------------------------------------------------------------- atom details


EXAMPLES = ROOT / "assets" / "examples"


def details_payload(scene: dict) -> dict:
    """The per-atom details the view's hover script reads."""
    return scene["details"]


def fake_explanation(n_atoms: int, n_capsules: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    routing = rng.dirichlet(np.ones(n_capsules), size=n_atoms)
    return {"routing": routing, "dominant_capsule": routing.argmax(1), "networks": [{}, {}, {}]}


@pytest.mark.parametrize(
    ("file", "supercell"), [("lifepo4_olivine.cif", (1, 1, 1)), ("srtio3_perovskite.cif", (2, 1, 1))]
)
def test_every_drawn_atom_carries_its_sites_details(file, supercell):
    s = read_structure(EXAMPLES / file)
    report = analyze_symmetry(s)
    explanation = fake_explanation(len(s))
    details = site_details(s, report, explanation)
    scene = build_viewer_scene(s, [colour_by_element(s)], supercell=supercell, details=details)
    data = details_payload(scene)
    parents, cart = cell_atoms(s, supercell)
    assert data["parents"] == parents and len(data["sites"]) == len(s) and data["highlight"] == -1
    names = unique_orbit_names(report)
    frac = viewer.wrapped_frac_coords(s)
    for i, (label, lines, weights) in enumerate(data["sites"]):
        orbit = report.orbits[int(report.orbit_index[i])]
        assert label == names[int(report.orbit_index[i])] and label.startswith(orbit.label)
        assert lines[0] == f"{label} · site {i} of {len(s)}"
        assert lines[1] == (
            f"{s[i].specie.symbol} · Wyckoff {orbit.multiplicity}{orbit.wyckoff_letter} · "
            f"site symmetry {report.site_symmetry_symbols[i]}"
        )
        assert lines[2] == "fractional (" + ", ".join(f"{x:.4f}" for x in frac[i]) + ")"
        xyz = s.lattice.get_cartesian_coords(frac[i])
        assert lines[3] == "Cartesian (" + ", ".join(f"{x:.3f}" for x in xyz) + ") Å"
        c = int(explanation["dominant_capsule"][i])
        assert lines[4].startswith(f"dominant capsule {c} ({explanation['routing'][i, c]:.2f}) (network 1 of 3)")
        assert weights == pytest.approx(explanation["routing"][i], abs=1e-4)
    # each drawn copy is its site moved by a whole lattice vector
    shifted = frac[parents] + np.array(data["shifts"])
    assert np.allclose(s.lattice.get_cartesian_coords(shifted), cart, atol=1e-6)
    assert data["colours"] == [viewer.capsule_colour(k) for k in range(8)]
    if file.startswith("lifepo4"):
        assert sorted(set(names)) == ["Fe 4c", "Li 4a", "O 4c (1)", "O 4c (2)", "O 8d", "P 4c"]
        assert data["sites"][0][1][1].startswith("Li · Wyckoff 4a · site symmetry -1")
    else:  # SrTiO3 in a 2x1x1 supercell: 3 x 2 x 2 Sr drawn, from the one Sr site
        assert parents.count(0) == 12 and data["sites"][0][0] == "Sr 1a" and data["sites"][2][0] == "O 3c"
        assert sorted({tuple(x) for x in data["shifts"]})[-1] == (2, 1, 1)
    assert (
        "setHoverable({}, true, onHover, onUnhover)" in VIEW_SCRIPT and "setClickable({}, true, onClick)" in VIEW_SCRIPT
    )
    assert '<body data-viewer-ready="0">' in VIEW_PAGE and 'setAttribute("data-viewer-ready", "1")' in VIEW_SCRIPT


def test_atom_details_without_a_prediction_or_symmetry():
    s = rocksalt()
    details = site_details(s, None, None)
    assert details[0].label == "Na" and details[0].weights == ()
    assert details[0].lines[1] == "Na · symmetry not known" and details[0].lines[-1] == "routing: needs a prediction"
    rows = atom_rows(s, analyze_symmetry(s), None)
    assert rows[1] == {"site": 1, "element": "Na", "orbit": "Na 4a", "site symmetry": "m-3m",
                       "fractional x, y, z": "0.500, 0.500, 0.000", "dominant capsule": None}  # fmt: skip


def test_side_by_side_views_all_get_the_hover_script():
    s = rocksalt()
    report = analyze_symmetry(s)
    orbits = colour_by_orbit(report.orbit_index, unique_orbit_names(report))
    scene = build_viewer_scene(s, [orbits, colour_by_element(s)], details=site_details(s, report))
    assert len(scene["views"]) == 2 and len(scene["details"]["sites"]) == len(s)
    assert (
        "setupDetails(views, scene.details)" in VIEW_SCRIPT
        and "views.forEach(function (v) {\n      v.setHoverDuration" in VIEW_SCRIPT
    )


def test_hostile_detail_strings_stay_text():
    s = rocksalt()
    hostile = [SiteDetails(SCRIPT + "\u2028", (SCRIPT, "<!-- & -->", '"; alert(2); "'), (0.5, 0.5)) for _ in s]
    scene = build_viewer_scene(s, [colour_by_element(s)], details=hostile, highlight=0)
    data = details_payload(scene)
    assert data["sites"][0] == [SCRIPT + "\u2028", [SCRIPT, "<!-- & -->", '"; alert(2); "'], [0.5, 0.5]]
    assert {text for text, _ in scene["highlightLabels"]} == {SCRIPT + "\u2028"}  # 3Dmol label text, 8 copies
    assert len(scene["highlightLabels"]) == 8
    # the view only ever writes the details as text
    assert "e.textContent = text;" in VIEW_SCRIPT and "b.title = " in VIEW_SCRIPT
    with pytest.raises(ValueError):
        build_viewer_scene(s, [colour_by_element(s)], details=[SiteDetails("x", (), (float("nan"),))] * len(s))


def test_the_highlighted_atom_is_drawn_larger_in_all_its_copies():
    s = rocksalt()
    report = analyze_symmetry(s)
    details = site_details(s, report)
    scene = build_viewer_scene(s, [colour_by_element(s)], details=details, highlight=0)
    parents, _ = cell_atoms(s)
    copies = [d for d, p in enumerate(parents) if p == 0]
    assert len(copies) == 8
    big = [style for style in scene["views"][0]["styles"] if style[2] == viewer.HIGHLIGHT_SCALE]
    assert big == [[copies, viewer.element_colour("Na"), 0.55]]
    assert [t for t, _ in scene["highlightLabels"]] == ["Na 4a"] * 8 and details_payload(scene)["highlight"] == 0
    assert 'setAttribute("data-highlighted-site"' in VIEW_SCRIPT
    with pytest.raises(ValueError, match="no atom 8"):
        build_viewer_scene(s, [colour_by_element(s)], details=details, highlight=8)
    with pytest.raises(ValueError, match="2 site details for 8 atoms"):
        build_viewer_scene(s, [colour_by_element(s)], details=details[:2])
    # the symmetry-element overlay still finds its place in a page with atom details
    from sen.symmetry_elements import cell_symmetry_elements

    shapes = viewer.symmetry_element_shapes(cell_symmetry_elements(s))
    with_elements = viewer.add_symmetry_elements(scene, shapes)
    assert with_elements["elements"]["n"] == shapes.n_shapes and with_elements["details"] == scene["details"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"selection": {"rows": [3], "columns": [], "cells": []}}, 3),
        ({"selection": {"rows": [], "columns": []}}, None),
        ({"selection": {"rows": [9]}}, None),  # a row the crystal does not have (it changed)
        (None, None),
        ({}, None),
        ({"selection": {"rows": ["x"]}}, None),
    ],
)
def test_selected_table_row(state, expected):
    assert selected_site(state, 5) == expected


@pytest.mark.skipif(not (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file(), reason="no shipped weights")
def test_the_page_has_an_atom_table_whose_selection_highlights_the_atom():
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=120)
    at.run()
    assert not at.exception
    table = next(d for d in at.dataframe if "site symmetry" in d.value.columns).value
    assert list(table["orbit"]) == ["Sr 1a", "Ti 1b", "O 3c", "O 3c", "O 3c"]  # the opening crystal, SrTiO3
    assert list(table.columns) == ["site", "element", "orbit", "site symmetry", "fractional x, y, z",
                                   "dominant capsule"]  # fmt: skip
    data = details_payload(scene_of(at))
    assert data["highlight"] == -1 and data["sites"][1][1][1] == "Ti · Wyckoff 1b · site symmetry m-3m"
    assert list(table["dominant capsule"]) == [int(line[1][4].split()[2]) for line in data["sites"]]
    at.session_state[TABLE_KEY] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    scene = scene_of(at)
    assert details_payload(scene)["highlight"] == 1
    assert [style[2] for style in scene["views"][0]["styles"]].count(viewer.HIGHLIGHT_SCALE) == 1
