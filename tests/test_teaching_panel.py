"""The teaching panel (app/teaching_panel.py): the link format, and its controls in a page
(tests/apps/teaching_app.py) run with AppTest and the shipped model; one browser test that the
symmetry elements are drawn."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.gallery import load_gallery  # noqa: E402
from app.teaching_panel import link_params, parse_link  # noqa: E402
from sen.predict import DEFAULT_MODEL, MODELS_DIR  # noqa: E402

pytestmark = pytest.mark.timeout(300)
APP = str(ROOT / "tests" / "apps" / "teaching_app.py")
needs_model = pytest.mark.skipif(not (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file(), reason="no shipped weights")
GALLERY = load_gallery()


# ---------------------------------------------------------------------------- the link format


def test_link_is_parsed_and_written_back_the_same():
    params = {
        "example": "srtio3_perovskite",
        "displace": "Ti:0,0,0.1",
        "strain": "c:2",
        "rattle": "0.05:7",
        "substitute": "Sr:Ba:keep",
        "supercell": "2,2,2",
        "colour": "orbit",
        "compare": "nacl_rocksalt",
        "elements": "1",
    }
    state = parse_link(params, GALLERY)
    assert state.errors == []
    assert state.example == "srtio3_perovskite.cif"
    assert state.displace == ("Ti", (0.0, 0.0, 1.0), pytest.approx(0.1))
    assert state.strain == ("c", 2.0) and state.rattle == (0.05, 7)
    assert state.substitute == ("Sr", "Ba", "keep") and state.supercell == (2, 2, 2)
    assert state.colour == "orbit" and state.compare == "nacl_rocksalt.cif" and state.elements is True
    assert link_params(state) == params


def test_displace_vector_is_direction_times_amplitude():
    state = parse_link({"displace": "O3c:0.0577,0.0577,0.0577"}, GALLERY)
    selector, direction, amplitude = state.displace
    assert selector == "O3c" and amplitude == pytest.approx(0.1, abs=1e-4)
    assert direction == pytest.approx((3**-0.5,) * 3, abs=1e-4)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("example", "unobtainium", "no example crystal"),
        ("displace", "Ti:0,0,5", "between 0 and 2 Å"),
        ("displace", "Ti:0,0", "needs 3 numbers"),
        ("displace", "<script>:0,0,1", "needs an element"),
        ("strain", "c:45", "between -30 and 30 %"),
        ("strain", "q:1", "MODE one of"),
        ("rattle", "0.9:1", "between 0 and 0.5 Å"),
        ("rattle", "0.1:1.5", "whole number"),
        ("substitute", "Na:Qq", "not a chemical element"),
        ("substitute", "Na:K:9", "between 0.5 and 2"),
        ("supercell", "9,1,1", "1 to 3"),
        ("colour", "purple", "colour must be one of"),
        ("elements", "maybe", "use 1 or 0"),
        ("displace", "Ti:nan,0,1", "finite"),
    ],
)
def test_bad_link_values_give_one_line_and_are_ignored(key, value, reason):
    state = parse_link({key: value, "example": "nacl_rocksalt"} if key != "example" else {key: value}, GALLERY)
    assert len(state.errors) == 1 and reason in state.errors[0] and "\n" not in state.errors[0]
    assert getattr(state, key) is None
    assert parse_link({key: value * 500}, GALLERY).errors  # long values are cut, never a crash


# ---------------------------------------------------------------------------- the page


def run_page(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@needs_model
def test_link_with_a_displacement_shows_p4mm_and_the_split():
    at = run_page(example="srtio3_perovskite", displace="Ti:0,0,0.1")
    assert not at.error and not at.warning
    markdown = texts(at.markdown)
    assert "Pm-3m (221) -\\> P4mm (99), index 6" in markdown
    split = [t for t in at.table if "orbit before" in str(t.value.columns.tolist())][0].value
    row = split[split["orbit before"] == "O 3c"].iloc[0]
    assert row["orbits after"] == "O 1b + O 2c" and row["split"] == "yes"
    assert "P4mm" in texts(at.info) and " eV" in metrics(at)["Band gap"]
    assert at.subheader[0].value == "SrTiO3 (cubic perovskite), changed"
    assert dict(at.query_params) == {"example": "srtio3_perovskite", "displace": "Ti:0,0,0.1"}
    assert "?example=srtio3_perovskite&displace=Ti:0,0,0.1" in texts(at.sidebar.code)


@needs_model
def test_link_with_a_substitution_predicts_kcl_and_compares_with_nacl():
    at = run_page(example="nacl_rocksalt", substitute="Na:K")
    assert not at.error
    assert "KCl" in texts(at.caption) and "Fm-3m (225) -\\> Fm-3m (225), index 1" in texts(at.markdown)
    assert "every Na replaced by K" in texts(at.markdown) and "ionic (Shannon" in texts(at.markdown)
    table = [t.value for t in at.table if "difference (right - left)" in t.value.columns][0]
    gap = table[table["property"] == "Band gap (eV)"].iloc[0]
    left, right = float(gap["NaCl (rock salt), changed"]), float(gap["NaCl (rock salt)"])
    assert float(gap["difference (right - left)"]) == pytest.approx(right - left, abs=0.011)
    assert float(metrics(at)["Band gap"].split()[0]) == pytest.approx(left, abs=0.006)  # the page shows KCl's
    assert len(at.get("plotly_chart")) == 2  # orbit x capsule routing on both sides


@needs_model
def test_an_element_the_model_never_saw_is_refused():
    at = run_page(example="nacl_rocksalt", substitute="Na:Fr")
    assert "Fr never appeared in the model's training data" in texts(at.error)
    assert at.subheader[0].value == "NaCl (rock salt)"  # the original crystal is shown
    assert "Fr" not in at.sidebar.selectbox(key="teach_sub_new").options[:-1]  # the picker offers trained ones only


@needs_model
def test_bad_link_warns_in_one_line_and_the_page_still_works():
    at = run_page(example="srtio3_perovskite", strain="c:99", displace="Zn:0,0,0.1")
    warnings = [w.value for w in at.warning]
    assert any("strain=c:99" in w and "between -30 and 30" in w for w in warnings)
    assert any("no orbit 'Zn'" in w for w in warnings)
    assert not at.exception and "Band gap" in metrics(at)


@needs_model
def test_controls_distort_strain_rattle_substitute_compare_and_elements():
    at = run_page(example="si_diamond")
    at.sidebar.selectbox(key="teach_strain_mode").set_value("c")
    at.sidebar.number_input(key="teach_strain").set_value(2.0)
    at.run()
    assert "Fd-3m (227) -\\> I4\\_1/amd (141), index 3" in texts(at.markdown)
    assert dict(at.query_params)["strain"] == "c:2"
    at.sidebar.number_input(key="teach_rattle").set_value(0.3)
    at.sidebar.number_input(key="teach_seed").set_value(5)
    at.run()
    assert "P1 (1), index" in texts(at.markdown) and dict(at.query_params)["rattle"] == "0.3:5"
    started = time.perf_counter()
    at.sidebar.selectbox(key="example").set_value(next(i for i, e in enumerate(GALLERY) if e.file.startswith("srtio3")))
    at.run()  # a new crystal resets the controls
    assert not at.exception and "changed" not in at.subheader[0].value
    at.sidebar.selectbox(key="teach_orbit").set_value("Ti 1b")
    at.sidebar.number_input(key="teach_amp").set_value(0.1)
    at.run()
    assert "P4mm (99), index 6" in texts(at.markdown)
    at.sidebar.selectbox(key="teach_sub_old").set_value("Sr")
    at.sidebar.selectbox(key="teach_sub_new").set_value("Ba")
    at.run()
    assert "BaTiO3" in texts(at.caption) and dict(at.query_params)["substitute"] == "Sr:Ba"
    at.selectbox(key="teach_compare").set_value("cscl.cif")
    at.run()
    assert "CsCl" in texts(at.markdown) and dict(at.query_params)["compare"] == "cscl"
    at.sidebar.toggle(key="teach_elements").set_value(True)
    at.run()
    scene = json.loads(at.get("component_instance")[0].proto.json_args)["scene"]
    assert scene["elements"]["n"] > 0 and "Symmetry elements of P4mm" in texts(at.caption)
    assert dict(at.query_params)["elements"] == "1"
    print(f"five interactions in {time.perf_counter() - started:.1f} s")


# ---------------------------------------------------------------------------- in the browser


@pytest.mark.browser
@needs_model
def test_symmetry_elements_toggle_changes_the_pixels(tmp_path):
    from benchmarks.bench_app_browser import CHROMIUM, VIEWER_TITLE, free_port, launch_chromium

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing")
    from PIL import Image, ImageChops
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port), "--server.headless", "true",
               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]  # fmt: skip
    log = open(tmp_path / "server.log", "w+b")  # noqa: SIM115
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the test page did not start"
                time.sleep(0.3)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(f"{url}/?example=srtio3_perovskite&displace=Ti:0,0,0.3")
            page.get_by_text("P4mm (99), index 6").first.wait_for(timeout=120_000)
            frame = page.frame_locator(f'iframe[title="{VIEWER_TITLE}"]')
            frame.locator('body[data-viewer-ready="1"]').wait_for(state="attached", timeout=60_000)
            page.wait_for_timeout(500)
            before = Image.open(io.BytesIO(frame.locator("canvas").first.screenshot())).convert("RGB")
            started = time.perf_counter()
            page.get_by_text("Show symmetry elements").click()
            frame.locator("body[data-symmetry-elements]").wait_for(state="attached", timeout=60_000)
            frame.locator('body[data-viewer-ready="1"]').wait_for(state="attached", timeout=60_000)
            seconds = time.perf_counter() - started
            page.wait_for_timeout(500)
            after = Image.open(io.BytesIO(frame.locator("canvas").first.screenshot())).convert("RGB")
            (ROOT / "test-artifacts").mkdir(exist_ok=True)
            after.save(ROOT / "test-artifacts" / "browser_symmetry_elements.png")
            diff = ImageChops.difference(before, after.resize(before.size)).convert("L")
            changed = sum(1 for v in diff.getdata() if v > 30)
            assert changed > 0.005 * before.size[0] * before.size[1], f"only {changed} pixels changed"
            assert frame.get_by_text("4-fold axis").count() == 1  # the legend
            print(f"symmetry elements drawn {seconds:.2f} s after the click")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
