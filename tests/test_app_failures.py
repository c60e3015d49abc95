"""No failure takes the page down: reading, predicting, symmetry and the standard cell each fail
alone, with one line in the user's terms on the page and the exception in the server log.

The sen call behind each step is made to raise (monkeypatch), on an upload whose bytes no other
test uses (the results cache is keyed by the file's SHA-256); two real files fail for real.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import threading
import uuid
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Poscar
from pymatgen.symmetry.analyzer import SymmetryUndeterminedError
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import app.results as results  # noqa: E402
from app.common import literal  # noqa: E402
from sen.predict import DEFAULT_MODEL, MODELS_DIR, Predictor  # noqa: E402

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file(), reason="no shipped weights"),
]
APP = str(ROOT / "app" / "Home.py")
EXAMPLE = "SrTiO3 (cubic perovskite)"


def unique_rutile() -> bytes:
    """A rutile POSCAR whose comment line makes its bytes (and so its cache key) new."""
    s = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.3053, 0.3053, 0]]
    )
    return Poscar(s, comment=f"rutile {uuid.uuid4()}").get_str().encode()


def run_with_upload(name: str, data: bytes) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.sidebar.file_uploader[0].set_value([(name, data, "application/octet-stream")])
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def footer(at: AppTest) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Page complete: "))


def only_error(at: AppTest) -> str:
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    return errors[0]


def logged(caplog, exc_type: type) -> bool:
    """The server logged the exception with its traceback: in this process, or sent back by the prediction's
    worker process (app.results.bounded)."""
    for r in caplog.records:
        if r.name != "sen_app":
            continue
        if r.exc_info and isinstance(r.exc_info[1], exc_type):
            return True
        if "failed in its worker with" in r.getMessage() and f"{exc_type.__name__}" in r.getMessage():
            return "Traceback (most recent call last)" in r.getMessage()
    return False


@pytest.fixture(autouse=True)
def app_log(caplog):
    caplog.set_level(logging.INFO, logger="sen_app")
    return caplog


def test_memory_error_while_reading_shows_the_example_instead(monkeypatch, caplog):
    real = results.read_structure

    def read(data, filename=None):
        if filename == "huge.cif":
            raise MemoryError("Memory allocation of 11913640704 bytes failed!")
        return real(data, filename=filename)

    monkeypatch.setattr(results, "read_structure", read)
    at = run_with_upload("huge.cif", unique_rutile())
    assert only_error(at) == literal(
        "huge.cif: reading the file needs more memory than this server has; is the cell unusually large or sparse?"
    )
    assert "Showing the example crystal" in texts(at.info)
    assert footer(at).startswith(f"Page complete: {literal(EXAMPLE)}")
    assert len(at.get("plotly_chart")) == 5 + 2  # routing charts and the library's parity plots
    assert logged(caplog, MemoryError)


def test_a_271_byte_cif_with_a_1000_angstrom_cell(caplog):
    """A real file: a 1000 Å cell with gamma = 120°, whose neighbour search once asked for 12 GB
    (a MemoryError). sen.io now refuses it with its own reason; the address space is capped for
    this test, so that if the file ever reached the neighbour search again, the allocation would
    fail at once and the page would still have to handle it."""
    cif = (
        b"data_x\n_cell_length_a 1000\n_cell_length_b 1000\n_cell_length_c 1000\n_cell_angle_alpha 90\n"
        b"_cell_angle_beta 90\n_cell_angle_gamma 120\nloop_\n_atom_site_label\n_atom_site_fract_x\n"
        b"_atom_site_fract_y\n_atom_site_fract_z\nNa 0 0 0\nCl 0.5 0.5 0.5\n"
    )
    assert len(cif) < 300
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.sidebar.file_uploader[0].set_value([("huge.cif", cif, "chemical/x-cif")])
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (in_use + (3 << 30), hard))
    try:
        at.run()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert not at.exception, at.exception
    assert only_error(at).startswith("huge.cif: ")
    assert "Showing the example crystal" in texts(at.info)
    assert footer(at).startswith(f"Page complete: {literal(EXAMPLE)}")
    at.run()  # the page keeps working
    assert not at.exception and only_error(at).startswith("huge.cif: ")


def test_failing_prediction_leaves_symmetry_and_3d_view(monkeypatch, caplog):
    def explain(self, structure, symprec=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(Predictor, "explain", explain)
    at = run_with_upload("rutile.vasp", unique_rutile())
    assert only_error(at) == literal(
        "No prediction for rutile.vasp: the prediction failed with an unexpected error (RuntimeError); "
        "it has been logged on the server"
    )
    assert "P4\\_2/mnm" in texts(at.markdown) and "Wyckoff orbits" in texts(at.markdown)
    assert len(at.get("component_instance")) == 1
    assert "The routing needs a prediction" in texts(at.info)
    assert footer(at).startswith("Page complete: rutile.vasp")
    assert [b.proto.label for b in at.get("download_button")] == ["Standardised cell (CIF)"]
    assert logged(caplog, RuntimeError)


def test_failing_symmetry_leaves_prediction_and_3d_view(monkeypatch, caplog):
    def analyze(*args, **kwargs):
        raise SymmetryUndeterminedError("spglib returned None")

    monkeypatch.setattr(results, "analyze_symmetry", analyze)
    at = run_with_upload("rutile.vasp", unique_rutile())
    assert only_error(at) == literal(
        "Spglib could not determine the symmetry for the symmetry analysis; try another symmetry tolerance"
    )
    assert {"Band gap", "Formation energy"} <= {m.label for m in at.metric}
    assert len(at.get("component_instance")) == 1 and len(at.get("plotly_chart")) == 5 + 2
    at.sidebar.radio(key="colour_mode").set_value("Wyckoff orbit").run()  # the network's orbits colour it
    assert not at.exception and "Ti 2a" in at.get("component_instance")[0].proto.json_args
    assert footer(at).startswith("Page complete: rutile.vasp")
    assert logged(caplog, SymmetryUndeterminedError)


def test_failing_standard_cell_leaves_the_rest_of_the_symmetry(monkeypatch, caplog):
    def standard(*args, **kwargs):
        raise SymmetryUndeterminedError("spglib returned None")

    monkeypatch.setattr(results, "spglib_standard_cell", standard)
    at = run_with_upload("rutile.vasp", unique_rutile())
    assert only_error(at) == literal(
        "No conventional standard cell: spglib could not determine the symmetry for the conventional standard "
        "cell; try another symmetry tolerance"
    )
    assert "P4\\_2/mnm" in texts(at.markdown)
    lattice, orbits = at.table[0].value, at.table[1].value
    assert list(lattice.columns) == ["parameter", "cell as given"]
    assert list(orbits["orbit"]) == ["Ti 2a", "O 4f"]
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Standardised cell (CIF)" not in labels and len(labels) == 4
    assert logged(caplog, SymmetryUndeterminedError)


def test_a_site_property_that_cannot_be_pickled_does_not_break_the_cache(monkeypatch):
    """pymatgen JSON could decode {"@module": "sys", "@callable": "stdout"} into sys.stdout as a site
    property (sen.io refuses such files now); any structure with such a property must still be cached."""
    real = results.read_structure

    def read(data, filename=None):
        structure = real(data, filename=filename)
        if filename == "NaCl.json":
            structure.add_site_property("note", [threading.Lock() for _ in structure])
        return structure

    monkeypatch.setattr(results, "read_structure", read)
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    record = nacl.as_dict()
    record["sites"][0]["properties"] = {"tag": str(uuid.uuid4())}  # new bytes: not in the cache yet
    at = run_with_upload("NaCl.json", json.dumps(record).encode())
    assert not at.error, [e.value for e in at.error]
    assert "Fm-3m" in texts(at.markdown)
    assert footer(at).startswith("Page complete: NaCl.json")
    assert {"Band gap", "Formation energy"} <= {m.label for m in at.metric}


def test_a_json_that_asks_for_code_gets_one_line():
    """The real file behind the test above: sen.io's reason, one line, and the example instead."""
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    record = nacl.as_dict()
    for site in record["sites"]:
        site["properties"] = {"note": {"@module": "sys", "@callable": "stdout"}, "tag": str(uuid.uuid4())}
    at = run_with_upload("NaCl.json", json.dumps(record).encode())
    assert only_error(at).startswith("NaCl.json: ")
    assert footer(at).startswith(f"Page complete: {literal(EXAMPLE)}")


def test_one_failing_file_in_a_batch(monkeypatch):
    import sen.symmetry  # sen.screen.featurise imports analyze_symmetry from here when it runs

    original = sen.symmetry.analyze_symmetry

    def analyze(structure, *args, **kwargs):
        if len(structure) == 6:  # the rutile file
            raise MemoryError
        return original(structure, *args, **kwargs)

    monkeypatch.setattr(sen.symmetry, "analyze_symmetry", analyze)
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.sidebar.file_uploader[0].set_value(
        [("rutile.vasp", unique_rutile(), "text/plain"), ("NaCl.vasp", Poscar(nacl).get_str().encode(), "text/plain")]
    )
    at.run()
    assert not at.exception
    assert list(at.dataframe[0].value["file"]) == ["NaCl.vasp"]  # the other file is still predicted
    errors = [e.value for e in at.error]
    reason = "featurising this crystal needs more memory than is available; is its cell unusually large?"
    assert literal(f"rutile.vasp: {reason}") in errors, errors


# ----------------------------------------------------------------------------- the prediction's worker


@pytest.fixture(scope="module")
def shipped():
    return Predictor.load(device="cpu")


def _srtio3():
    from sen.io import read_structure

    return read_structure(ROOT / "assets" / "examples" / "srtio3_perovskite.cif")


@pytest.mark.skipif(not results.fork_available(), reason="needs fork")
def test_predictions_run_in_a_worker_with_the_same_numbers(shipped, monkeypatch):
    structure = _srtio3()
    direct = shipped.explain(structure)
    assert results.isolate_predictions(shipped)
    worker = results.bounded_explain(shipped, structure)
    assert worker["band_gap"] == direct["band_gap"] and (worker["routing"] == direct["routing"]).all()
    pids = []
    monkeypatch.setattr(shipped, "explain", lambda s: pids.append(__import__("os").getpid()) or direct)
    results.bounded_explain(shipped, structure)
    assert pids == []  # the call happened in the child, whose list this process never sees
    monkeypatch.setenv("SEN_ISOLATE", "0")
    results.bounded_explain(shipped, structure)
    assert len(pids) == 1


@pytest.mark.skipif(not results.fork_available(), reason="needs fork")
def test_a_prediction_past_its_limits_is_stopped_with_one_line(shipped, monkeypatch):
    import time

    structure = _srtio3()
    monkeypatch.setattr(results, "EXPLAIN_TIME_LIMIT", 0.5)
    monkeypatch.setattr(shipped, "explain", lambda s: time.sleep(60))
    t = time.perf_counter()
    with pytest.raises(results.ComputeError, match=r"^the prediction took longer than 0.5 s, so it was stopped"):
        results.bounded_explain(shipped, structure)
    assert time.perf_counter() - t < 3
    monkeypatch.setattr(results, "EXPLAIN_MEMORY_LIMIT", 256 * 1024**2)
    monkeypatch.setattr(results, "EXPLAIN_TIME_LIMIT", 20.0)
    monkeypatch.setattr(shipped, "explain", lambda s: bytearray(4 * 1024**3))
    with pytest.raises(results.ComputeError, match=r"^the prediction needed more than 0.25 GB of memory"):
        results.bounded_explain(shipped, structure)
    monkeypatch.setattr(shipped, "explain", lambda s: {}["band_gap"])
    with pytest.raises(results.ComputeError, match=r"unexpected error \(KeyError\); it has been logged"):
        results.bounded_explain(shipped, structure)


@pytest.mark.skipif(not results.fork_available(), reason="needs fork")
def test_a_visitor_leaving_stops_the_worker_and_nothing_is_cached(shipped, monkeypatch):
    import time

    monkeypatch.setattr(shipped, "explain", lambda s: time.sleep(60))
    left = time.monotonic() + 0.3
    monkeypatch.setattr(results, "_session_gone", lambda: lambda: time.monotonic() > left)
    t = time.perf_counter()
    with pytest.raises(results.SessionEnded):
        results.bounded_explain(shipped, _srtio3())
    assert time.perf_counter() - t < 3
    with pytest.raises(results.SessionEnded):  # raised through the cache, so the next visit computes again
        results._attempt("the prediction", "x.cif", lambda: results.bounded_explain(shipped, _srtio3()))


def test_a_timed_out_prediction_is_not_cached(monkeypatch):
    calls = []

    def flaky():
        calls.append(1)
        raise results._Retryable("the prediction took longer than 30 s, so it was stopped")

    for _ in range(2):
        with pytest.raises(results.ComputeError, match="took longer"):
            results._attempt("the prediction", "x.cif", flaky)
    assert len(calls) == 2


@pytest.mark.skipif(not results.fork_available(), reason="needs fork")
def test_at_most_max_workers_predict_at_once(shipped, monkeypatch, tmp_path):
    import threading
    import time

    monkeypatch.setattr(results, "MAX_WORKERS", 2)
    monkeypatch.setattr(results, "_WORKERS", threading.BoundedSemaphore(2))

    def work(name):  # runs in the worker: leaves its start and end times in a file
        start = time.time()
        time.sleep(0.4)
        (tmp_path / f"{name}.txt").write_text(f"{start} {time.time()}")
        return name

    threads = [threading.Thread(target=results.bounded, args=(shipped, work, (str(i),), "x")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    spans = [tuple(map(float, p.read_text().split())) for p in tmp_path.glob("*.txt")]
    assert len(spans) == 6
    overlap = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert overlap == 2  # two at a time, never more


@pytest.mark.skipif(not results.fork_available(), reason="needs fork")
def test_uploads_are_predicted_in_a_worker_and_the_apps_own_crystals_in_the_server(shipped, monkeypatch):
    calls = []
    real = results.run_isolated
    monkeypatch.setattr(results, "run_isolated", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    example = results.CrystalFile.from_path(ROOT / "assets" / "examples" / "srtio3_perovskite.cif", origin="example")
    upload = results.CrystalFile.from_bytes("rutile.vasp", unique_rutile())
    shown = results.explain_crystal(example, shipped)
    assert calls == []
    predicted = results.explain_crystal(upload, shipped)
    assert len(calls) == 1 and set(predicted) == set(shown)
