"""End to end in headless Chromium: a .zip of three example crystals uploaded through the sidebar gives
the table, and its CSV download holds one ``sen screen`` row per crystal with Predictor.predict's numbers.

Needs /usr/bin/chromium (scripts/install-chromium.sh); without it the test skips, unless
SEN_REQUIRE_BROWSER=1 (set by .ci/run), where a missing browser is a failure.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.gallery import default_index, load_gallery  # noqa: E402
from benchmarks.bench_app_browser import CHROMIUM, digest_of, launch_chromium, serve_app, wait_for_complete_page  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
EXAMPLES = ROOT / "assets" / "examples"
THREE = ["nacl_rocksalt.cif", "tio2_rutile.cif", "cu_fcc.cif"]


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
def app_url(chromium):  # chromium first: no server is started when the test skips
    from sen.predict import DEFAULT_MODEL, MODELS_DIR

    if not (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file():
        pytest.skip(f"no weights at {MODELS_DIR / DEFAULT_MODEL}")
    with serve_app() as url:
        yield url


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
