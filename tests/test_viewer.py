"""The 3D viewer page (app/viewer.py): geometry, colours, local 3Dmol.js and escaping."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import viewer  # noqa: E402
from app.viewer import (  # noqa: E402
    CDN_3DMOL_URL,
    LOCAL_3DMOL_URL,
    AtomColouring,
    build_viewer_html,
    cell_atoms,
    colour_by_capsule,
    colour_by_element,
    colour_by_orbit,
)
from sen.symmetry import analyze_symmetry  # noqa: E402

pytestmark = pytest.mark.timeout(120)
SCRIPT = "</script><script>window.__sen_pwned=1;alert(1)</script>"


def rocksalt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def model_atoms(page: str) -> list[str]:
    """The XYZ block handed to 3Dmol, one line per drawn atom."""
    block = re.search(r'addModel\("(.*?)","xyz"\)', page).group(1)
    return block.split("\\n")[2:-1]


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


def test_page_uses_local_3dmol_and_draws_every_atom_in_its_colour():
    s = rocksalt()
    page = build_viewer_html(s, [colour_by_element(s)], js_url=LOCAL_3DMOL_URL, name="NaCl")
    assert f"loadScriptAsync('{LOCAL_3DMOL_URL}')" in page
    assert "cdn" not in page.lower() and "http" not in page
    atoms = model_atoms(page)
    assert len(atoms) == 27 and {a.split()[0] for a in atoms} == {"Na", "Cl"}
    na, cl = viewer.element_colour("Na"), viewer.element_colour("Cl")
    assert na != cl and f'"color": "{na}"' in page and f'"color": "{cl}"' in page
    assert page.count("addCylinder(") == 12  # the edges of the unit cell
    assert "antialias:false" in page
    assert 'data-crystal="NaCl"' in page
    assert build_viewer_html(s, [colour_by_element(s)], js_url=LOCAL_3DMOL_URL, name="NaCl") == page


def test_side_by_side_gives_two_linked_views_with_their_own_colours():
    s = rocksalt()
    report = analyze_symmetry(s)
    orbits = colour_by_orbit(report.orbit_index, [o.label for o in report.orbits])
    capsules = colour_by_capsule([0, 0, 0, 0, 5, 5, 5, 5], 8)
    page = build_viewer_html(s, [orbits, capsules], js_url=LOCAL_3DMOL_URL)
    assert "createViewerGrid" in page and "rows: 1, cols: 2" in page
    assert "viewergrid_sen[0][1].setStyle" in page and "viewergrid_sen[0][0].setStyle" in page
    assert "Na 4a" in page and "Cl 4b" in page and "capsule 5" in page and "capsule 1" not in page
    assert capsules.colours[0] == viewer.capsule_colour(0) != capsules.colours[4]


def test_user_strings_cannot_break_out_of_the_script():
    s = rocksalt()
    colouring = AtomColouring("Element", colour_by_element(s).colours, ((SCRIPT, "#ff0000"),))
    page = build_viewer_html(s, [colouring], atom_labels=[SCRIPT] * len(s), js_url=LOCAL_3DMOL_URL, name=SCRIPT)
    assert "alert(1)</script>" not in page and "<script>window" not in page
    assert page.lower().count("<script") == page.lower().count("</script>") == 2
    assert "\\u003c/script\\u003e\\u003cscript\\u003ewindow" in page  # labels: JSON with < > escaped
    assert "&lt;/script&gt;&lt;script&gt;" in page  # legend and data attribute: HTML-escaped


def test_bad_colours_and_counts_are_refused():
    s = rocksalt()
    with pytest.raises(ValueError, match="colour"):
        build_viewer_html(s, [AtomColouring("x", ("red",) * len(s), ())])
    with pytest.raises(ValueError, match="colours for 8 atoms"):
        build_viewer_html(s, [AtomColouring("x", ("#ff0000",), ())])
    with pytest.raises(ValueError, match="too many"):
        big = rocksalt() * (4, 4, 4)
        build_viewer_html(big, [colour_by_element(big)], supercell=(3, 3, 3))


def test_script_url_falls_back_to_the_cdn(monkeypatch, tmp_path):
    monkeypatch.setattr(viewer, "LOCAL_3DMOL_FILE", tmp_path / "missing.js")
    assert not viewer.local_script_available()
    assert viewer.script_url() == CDN_3DMOL_URL
    js = tmp_path / "3Dmol-min.js"
    js.write_text("/* 3Dmol */")
    monkeypatch.setattr(viewer, "LOCAL_3DMOL_FILE", js)
    assert viewer.script_url() == LOCAL_3DMOL_URL


def _render_app(root: str):
    import sys

    import streamlit as st

    sys.path.insert(0, root)
    from app.viewer import render_viewer

    render_viewer("<!DOCTYPE html><p>viewer</p>", 300)
    st.caption("after")


def test_render_viewer_embeds_the_page_in_an_iframe():
    at = AppTest.from_function(_render_app, args=(str(ROOT),), default_timeout=60)
    at.run()
    assert not at.exception
    frames = at.get("iframe")
    assert len(frames) == 1 and frames[0].proto.srcdoc == "<!DOCTYPE html><p>viewer</p>"
    assert at.caption[0].value == "after"


def test_missing_local_3dmol_is_announced_and_the_cdn_used(monkeypatch, tmp_path):
    monkeypatch.setattr(viewer, "LOCAL_3DMOL_FILE", tmp_path / "missing.js")
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert any("3Dmol.js is not installed" in w.value for w in at.warning)
    assert CDN_3DMOL_URL in at.get("iframe")[0].proto.srcdoc


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
    page = build_viewer_html(s, [colour_by_element(s)], supercell=(3, 3, 3), atom_labels=names, js_url=LOCAL_3DMOL_URL)
    assert page.count('addLabel("Na site"') == 27 and page.count('addLabel("Cl site"') == 27
