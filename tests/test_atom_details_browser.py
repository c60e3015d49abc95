"""The atom details of the 3D view in a real browser: hovering and clicking an atom of SrTiO3 shows its
element and Wyckoff label, and picking a row of the atom table highlights that atom in the view.

Run alone: ``python -m pytest -m browser tests/test_atom_details_browser.py -q`` (starts the app on a
free port and drives Debian's Chromium with playwright)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.viewer import cell_atoms  # noqa: E402
from benchmarks.bench_teaching_browser import most_isolated_atom  # noqa: E402
from sen.io import read_structure  # noqa: E402
from sen.predict import DEFAULT_MODEL, MODELS_DIR  # noqa: E402
from sen.symmetry import analyze_symmetry, unique_orbit_names  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(400),
    pytest.mark.skipif(not (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file(), reason="no shipped weights"),
]
EXAMPLE = ROOT / "assets" / "examples" / "srtio3_perovskite.cif"


@pytest.fixture(scope="module")
def browser_and_url(tmp_path_factory):
    from benchmarks.bench_app_browser import CHROMIUM, launch_chromium, serve_app

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    log = tmp_path_factory.mktemp("server") / "server.log"
    with serve_app(log_path=log) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser, url
        browser.close()


def open_view(browser, url: str):
    """A page showing SrTiO3 whose 3D view has its atom details; returns (page, frame locator, frame)."""
    from benchmarks.bench_app_browser import VIEWER_TITLE

    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(f"{url}/?example=srtio3_perovskite")
    frame_locator = page.frame_locator(f'iframe[title="{VIEWER_TITLE}"]')
    frame_locator.locator('body[data-viewer-ready="1"][data-atom-details="5"]').wait_for(
        state="attached", timeout=180_000
    )
    frame = page.locator(f'iframe[title="{VIEWER_TITLE}"]').element_handle().content_frame()
    page.wait_for_timeout(300)
    return page, frame_locator, frame


def canvas_image(frame_locator):
    from PIL import Image

    return Image.open(io.BytesIO(frame_locator.locator("canvas").first.screenshot())).convert("RGB")


def test_hovering_and_clicking_an_atom_shows_its_element_and_wyckoff_label(browser_and_url):
    browser, url = browser_and_url
    structure = read_structure(EXAMPLE)
    report = analyze_symmetry(structure)
    parents, _ = cell_atoms(structure)
    page, frame_locator, frame = open_view(browser, url)
    drawn, x, y = most_isolated_atom(frame)
    site = parents[drawn]
    orbit = report.orbits[int(report.orbit_index[site])]
    name = unique_orbit_names(report)[int(report.orbit_index[site])]
    canvas = frame_locator.locator("canvas").first
    body = frame_locator.locator("body")
    details = frame_locator.locator("#atom-details")
    assert details.is_hidden()

    canvas.hover(position={"x": x, "y": y})
    frame_locator.locator(f'body[data-atom-drawn="{drawn}"]').wait_for(state="attached", timeout=10_000)
    text = details.inner_text()
    assert body.get_attribute("data-atom-site") == str(site) and details.is_visible()
    assert text.startswith(f"{name} · site {site} of 5")
    assert f"{structure[site].specie.symbol} · Wyckoff {orbit.multiplicity}{orbit.wyckoff_letter}" in text
    assert f"site symmetry {report.site_symmetry_symbols[site]}" in text and "dominant capsule" in text

    box = canvas.bounding_box()
    canvas.hover(position={"x": box["width"] - 4, "y": box["height"] - 4})  # off the atom: the details go
    frame_locator.locator("body:not([data-atom-site])").wait_for(state="attached", timeout=10_000)
    assert details.is_hidden()
    canvas.hover(position={"x": x, "y": y})
    frame_locator.locator(f'body[data-atom-drawn="{drawn}"]').wait_for(state="attached", timeout=10_000)
    page.mouse.move(5, 5)  # and off the canvas, out of the frame
    frame_locator.locator("body:not([data-atom-site])").wait_for(state="attached", timeout=10_000)

    canvas.click(position={"x": x, "y": y})  # a click keeps them
    frame_locator.locator(f'body[data-atom-pinned="{site}"]').wait_for(state="attached", timeout=10_000)
    page.mouse.move(5, 5)
    page.wait_for_timeout(400)
    assert details.is_visible() and details.inner_text().startswith(f"{name} · site {site}")
    canvas.click(position={"x": x, "y": y})  # a second click lets go
    frame_locator.locator("body:not([data-atom-pinned])").wait_for(state="attached", timeout=10_000)
    page.close()


def test_selecting_a_table_row_highlights_that_atom_in_the_view(browser_and_url):
    from PIL import ImageChops

    browser, url = browser_and_url
    page, frame_locator, _ = open_view(browser, url)
    before = canvas_image(frame_locator)
    table = page.locator('[data-testid="stDataFrame"]').filter(has_text="site sym.").first
    table.scroll_into_view_if_needed()
    table.click(position={"x": 15, "y": 35 * 2 + 17})  # the row marker of row 1 (Ti), under the header
    highlighted = frame_locator.locator('body[data-highlighted-site="1"][data-viewer-ready="1"]')
    highlighted.wait_for(state="attached", timeout=60_000)
    details = frame_locator.locator("#atom-details")
    assert details.is_visible() and details.inner_text().startswith("Ti 1b · site 1 of 5")
    # only the drawing counts: hide the details box over the canvas before comparing pixels
    details.evaluate("box => { box.hidden = true; }")
    page.wait_for_timeout(500)
    after = canvas_image(frame_locator)
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    after.save(ROOT / "test-artifacts" / "browser_atom_highlight.png")
    diff = ImageChops.difference(before, after.resize(before.size)).convert("L")
    changed = sum(diff.histogram()[31:])
    assert changed > 0.003 * before.size[0] * before.size[1], f"only {changed} pixels changed"
    page.close()


def test_a_change_is_drawn_in_the_same_view_which_keeps_the_users_rotation(browser_and_url):
    """Recolouring and distorting redraw the view in place (same document, same WebGL canvas) and keep the
    rotation the user gave it."""
    browser, url = browser_and_url
    page, frame_locator, frame = open_view(browser, url)
    frame.evaluate("() => { window.__sameDocument = 1; viewer_sen.rotate(50, 'y'); viewer_sen.render(); }")
    frame.evaluate("() => { window.__canvas = document.querySelector('canvas'); }")
    rotated = frame.evaluate("() => viewer_sen.getView()")
    drawn = frame.evaluate("() => document.body.getAttribute('data-render')")

    def redrawn_after(action) -> None:
        nonlocal drawn
        action()
        frame.wait_for_function(
            "before => document.body.getAttribute('data-render') !== before"
            " && document.body.getAttribute('data-viewer-ready') === '1'",
            arg=drawn,
            timeout=60_000,
        )
        drawn = frame.evaluate("() => document.body.getAttribute('data-render')")

    sidebar = page.locator('[data-testid="stSidebar"]')
    redrawn_after(lambda: sidebar.get_by_text("Wyckoff orbit", exact=True).click())
    assert frame_locator.get_by_text("Ti 1b").count() == 1  # the legend of the new colouring
    field = sidebar.get_by_label("Rattle every atom by up to (Å)", exact=True)
    redrawn_after(lambda: (field.fill("0.05"), field.press("Enter")))
    state = frame.evaluate(
        "() => [window.__sameDocument, window.__canvas === document.querySelector('canvas'),"
        " document.querySelectorAll('canvas').length, viewer_sen.getView()]"
    )
    assert state[:3] == [1, True, 1], state  # one canvas, the same one: nothing was rebuilt
    assert state[3] == pytest.approx(rotated, abs=1e-6)  # the user's rotation is kept
    page.close()
