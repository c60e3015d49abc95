"""End to end in headless Chromium: the served app, as a visitor sees it.

Needs /usr/bin/chromium (scripts/install-chromium.sh). Without it these tests skip, unless
SEN_REQUIRE_BROWSER=1 (set by .ci/run), where a missing browser is a failure.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.gallery import default_index, load_gallery  # noqa: E402
from benchmarks.bench_app_browser import (  # noqa: E402
    CHROMIUM,
    VIEWER_TITLE,
    digest_of,
    launch_chromium,
    pick_example,
    serve_app,
    wait_for_complete_page,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).is_file():
        message = f"{CHROMIUM} is missing; run scripts/install-chromium.sh"
        if os.environ.get("SEN_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app_url(chromium):  # chromium first: no server is started when the tests skip
    from sen.predict import DEFAULT_MODEL, MODELS_DIR  # honours SEN_MODELS_DIR, as the served app does

    if not (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file():
        pytest.skip(f"no weights at {MODELS_DIR / DEFAULT_MODEL}")
    with serve_app() as url:
        yield url


@pytest.fixture
def page(chromium, app_url):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.requests = []  # every URL the page and its frames asked for
    page.dialogs = []
    page.on("request", lambda request: page.requests.append(request.url))

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 3400})  # the whole page, charts included
    page.screenshot(path=str(ARTIFACTS / name))


def canvas_colours(page) -> int:
    """Distinct pixel colours of the 3D canvas (1 for a blank one)."""
    from PIL import Image

    canvas = page.frame_locator(f'iframe[title="{VIEWER_TITLE}"]').locator("canvas").first
    image = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 24))


def open_app(page, url: str):
    gallery = load_gallery()
    opening = gallery[default_index(gallery)]
    page.goto(url)
    wait_for_complete_page(page, opening.name, digest_of(opening.path), timeout_ms=120_000)
    return gallery


def test_choosing_an_example_shows_numbers_3d_view_and_heatmaps(page, app_url):
    gallery = open_app(page, app_url)
    nacl = next(e for e in gallery if e.file == "nacl_rocksalt.cif")
    pick_example(page, nacl.name, nacl.label)
    wait_for_complete_page(page, nacl.name, digest_of(nacl.path))

    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert any(v.strip().endswith(" eV") and v.strip()[0] in "-0123456789" for v in values)
    assert any(v.strip().endswith(" eV/atom") for v in values)
    assert any(v.strip() in ("Metal", "Insulator") for v in values)
    assert page.get_by_text("Fm-3m", exact=True).count() >= 1

    assert canvas_colours(page) > 20, "the 3D canvas is blank"
    plots = page.locator(".js-plotly-plot")
    assert plots.count() == 5 + 2  # the routing charts and the library's two parity plots
    assert page.locator(".js-plotly-plot .heatmaplayer").count() == 4  # atoms, orbits, attention, outputs
    assert page.locator(".js-plotly-plot .barlayer").count() == 1

    hosts = {urlparse(u).hostname for u in page.requests if u.startswith("http")}
    assert hosts <= {"127.0.0.1", "localhost"}, f"requests left the machine: {hosts}"
    assert any(urlparse(u).path == "/app/static/3Dmol-min.js" for u in page.requests)
    assert not any("cdn" in u or "jsdelivr" in u for u in page.requests)
    assert not page.dialogs
    screenshot(page, "browser_example_nacl.png")


def test_colour_by_orbit_side_by_side_draws_two_views(page, app_url):
    open_app(page, app_url)
    page.get_by_text("Orbit | capsule side by side").click()
    frame = page.frame_locator(f'iframe[title="{VIEWER_TITLE}"]')
    frame.locator("text=O 3c").first.wait_for()
    frame.locator("text=capsule").first.wait_for()
    assert frame.locator('body[data-viewer-ready="1"]').count() == 1
    assert frame.locator("canvas").count() >= 1
    assert canvas_colours(page) > 20


def _evil_cif() -> tuple[str, bytes]:
    """A valid rock-salt CIF whose block name, a comment and a name field carry scripts."""
    payload = "</script><script>window.top.__sen_pwned=1;alert('pwned')</script>"
    image = "<img src=x onerror=\"window.top.__sen_pwned=2;alert('img')\">"
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    text = str(CifWriter(nacl)).replace("data_NaCl", "data_NaCl" + payload.replace(" ", ""))
    text = f"# {payload} {image}\n{text}_chemical_name_common '{payload} {image}'\n"
    return "rocksalt_<b>bold</b>_<img src=x onerror=alert(3)>.cif", text.encode()


def test_uploaded_cif_with_script_executes_nothing(page, app_url):
    open_app(page, app_url)
    name, data = _evil_cif()
    page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(
        files=[{"name": name, "mimeType": "chemical/x-cif", "buffer": data}]
    )
    wait_for_complete_page(page, name, digest_of(data))
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    assert page.get_by_text("Fm-3m", exact=True).count() >= 1
    assert canvas_colours(page) > 20
    page.wait_for_timeout(500)  # give any injected handler the chance to fire
    assert page.dialogs == []
    for frame in page.frames:
        assert frame.evaluate("() => window.__sen_pwned === undefined"), frame.url
    # the file name is shown as text, not as markup
    assert page.locator("h3", has_text="rocksalt_<b>bold</b>").count() == 1
    assert page.locator('[data-testid="stMain"] img[src="x"]').count() == 0
    screenshot(page, "browser_upload_script_payload.png")


def test_bad_upload_shows_its_reason_and_the_page_keeps_working(page, app_url):
    gallery = open_app(page, app_url)
    page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(
        files=[{"name": "notes.cif", "mimeType": "chemical/x-cif", "buffer": b"data_x\n_cell_length_a 4\n"}]
    )
    error = page.locator('[data-testid="stAlertContentError"]').first
    error.wait_for()
    assert error.inner_text().startswith("notes.cif: ")
    assert "Traceback" not in page.content()
    opening = gallery[default_index(gallery)]
    wait_for_complete_page(page, opening.name, digest_of(opening.path))  # the example is shown instead
    screenshot(page, "browser_bad_upload.png")


def _lifepo4_copies(n: int) -> list[dict]:
    """``n`` LiFePO4 CIFs with different bytes (a comment line), so none is served from the cache."""
    text = (ROOT / "assets" / "examples" / "lifepo4_olivine.cif").read_text()
    return [
        {
            "name": f"lifepo4_{i:02d}.cif",
            "mimeType": "chemical/x-cif",
            "buffer": f"# copy {i} {time.time()}\n{text}".encode(),
        }
        for i in range(n)
    ]


def test_leaving_the_page_stops_a_batch_prediction(chromium, app_url, tmp_path):
    """Streamlit stops a session's run when its websocket closes; the batch loop gives it the chance
    after every file (the progress bar), so the server stops predicting within a file or so."""
    del app_url  # needs the weights check of that fixture, but its own server, to read the log
    log_path = tmp_path / "server.log"
    with serve_app(log_path=log_path) as url:
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        open_app(page, url)
        files = _lifepo4_copies(48)  # about 50 ms each: a batch of 2-3 s
        page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(files=files)
        page.wait_for_function(
            """() => [...document.querySelectorAll('[data-testid="stProgress"]')]
                      .some(e => /^[0-9]+ of 48 files: /.test(e.innerText.trim()))""",
            polling=20,
            timeout=60_000,
        )
        context.close()  # the visitor leaves in the middle of the batch
        deadline = time.monotonic() + 30
        while "batch prediction stopped after" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        log = log_path.read_text()
    stopped = re.search(r"batch prediction stopped after (\d+) of 48 files", log)
    assert stopped, log[-3000:]
    assert int(stopped.group(1)) < 48


# ----------------------------------------------------------------------------- the known crystals


def _library_crystal(material_id: str):
    """The shipped library and one of its crystals as the page's CrystalFile (its title and cache key)."""
    from app.library_panel import crystal_file
    from sen.library import Library, LibraryError

    try:
        library = Library.load()
    except LibraryError as exc:
        pytest.skip(f"no crystal library: {exc}")
    return library, crystal_file(library, material_id)


def test_a_crystal_link_opens_the_known_crystal_with_dft_split_and_neighbours(page, app_url):
    library, linked = _library_crystal("mp-19017")
    page.goto(f"{app_url}/?crystal=mp-19017")
    wait_for_complete_page(page, linked.title, linked.digest, timeout_ms=120_000)
    assert page.locator("h3", has_text="mp-19017 LiFePO4").count() == 1
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    assert sum(t.strip() == "DFT (Materials Project)" for t in labels) == 2  # band gap and formation energy
    dft = library.get("mp-19017")
    values = [v.strip() for v in page.locator('[data-testid="stMetricValue"]').all_inner_texts()]
    assert f"{dft['formation_energy_per_atom']:.3f}" in values and f"{dft['band_gap']:.3f}" in values
    assert page.get_by_text("Training crystal: the model was fitted to it, so this is not a test").count() == 1
    assert page.get_by_text("Nearest known crystals", exact=True).count() == 1
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]', has_text="Open a crystal")
    assert picker.locator("input").input_value() == "mp-19017  LiFePO4"  # the link preselects the crystal
    assert urlparse(page.url).query.startswith("crystal=mp-19017")
    screenshot(page, "browser_library_link.png")


def test_searching_the_library_and_picking_a_test_crystal_opens_it_and_writes_the_link(page, app_url):
    library, _ = _library_crystal("mp-19017")
    open_app(page, app_url)
    matches = library.search(formula="MgO")
    test_ids = [m for m, s in zip(matches["material_id"], matches["split"], strict=True) if s == "test"]
    assert test_ids, "the shipped split has an MgO test crystal (mp-549706)"
    box = page.locator('[data-testid="stSidebar"]').get_by_role("textbox", name="Formula or elements")
    box.fill("MgO")
    box.press("Enter")
    page.get_by_text("crystals match.").first.wait_for()
    _, wanted = _library_crystal(test_ids[0])
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]', has_text="Open a crystal")
    picker.wait_for()
    picker.click()
    page.keyboard.type(test_ids[0])  # filter the list, so the option is on screen (as pick_example does)
    option = page.get_by_role("option", name=re.compile(rf"^{test_ids[0]}\s+MgO$"))
    option.wait_for(state="visible")
    option.click()
    wait_for_complete_page(page, wanted.title, wanted.digest, timeout_ms=120_000)
    assert page.get_by_text("Test crystal: the model never saw it, a fair test").count() == 1
    page.wait_for_function("id => location.search.includes('crystal=' + id)", arg=test_ids[0], timeout=10_000)


def test_the_standardised_cell_is_written_when_downloaded(page, app_url):
    from sen.io import read_structure

    open_app(page, app_url)
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Standardised cell (CIF)").click()
    text = Path(download.value.path()).read_text()
    cell = read_structure(text, filename="standard.cif")
    assert download.value.suggested_filename.endswith("_conventional_standard.cif")
    assert "_symmetry_space_group_name_H-M" in text and len(cell) >= 1


# ----------------------------------------------------------------------------- a .zip upload

EXAMPLES = ROOT / "assets" / "examples"
THREE = ["nacl_rocksalt.cif", "tio2_rutile.cif", "cu_fcc.cif"]


def three_crystals_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in THREE:
            zf.writestr(f"examples/{name}", (EXAMPLES / name).read_bytes())
    return out.getvalue()


def test_a_zip_upload_gives_the_table_and_a_csv_of_its_rows(chromium, app_url, tmp_path):
    from sen import Predictor, read_structure

    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    try:
        gallery = load_gallery()
        opening = gallery[default_index(gallery)]
        page.goto(app_url)
        wait_for_complete_page(page, opening.name, digest_of(opening.path), timeout_ms=120_000)
        page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(
            files=[{"name": "three.zip", "mimeType": "application/zip", "buffer": three_crystals_zip()}]
        )
        page.get_by_text("Predictions for the 3 files in three.zip").wait_for(timeout=120_000)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
        page.get_by_text("3 of 3 files predicted").wait_for(timeout=60_000)
        button = page.locator('[data-testid="stDownloadButton"] button', has_text="All predictions (CSV)")
        with page.expect_download(timeout=60_000) as download:
            button.click()
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        assert path.name == "sen_predictions.csv"
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    finally:
        context.close()
    assert [r["id"] for r in rows] == [f"examples/{name}" for name in THREE]
    assert [r["source"] for r in rows] == ["three.zip"] * 3
    assert [r["formula"] for r in rows] == ["NaCl", "TiO2", "Cu"]
    assert [r["space_group"] for r in rows] == ["Fm-3m", "P4_2/mnm", "Fm-3m"]
    assert [r["error"] for r in rows] == ["", "", ""]
    expected = Predictor.load().predict([read_structure(EXAMPLES / name) for name in THREE])
    for column, key in [("band_gap_eV", "band_gap"), ("formation_energy_eV_per_atom", "formation_energy_per_atom")]:
        assert [float(r[column]) for r in rows] == pytest.approx([e[key] for e in expected], abs=1e-6), column
    assert [r["is_metal"] for r in rows] == [str(e["is_metal"]) for e in expected]
