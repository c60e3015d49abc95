"""app/serve.py: the README's launcher serves app/Home.py and, before it answers, fills the caches the
first page reads with the shipped model and the opening gallery crystal. (That the served page works
end to end is tests/test_browser.py and tests/test_app_server.py, which start this launcher.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import library_panel, results  # noqa: E402
from app.gallery import default_index, load_gallery  # noqa: E402


@pytest.fixture()
def serve():
    """app.serve, imported without leaving its st.App's choice of script directory in Streamlit's config."""
    from streamlit import config

    before = config._main_script_path
    import app.serve as module

    config._main_script_path = before
    return module


def _opening_crystal() -> results.CrystalFile:
    gallery = load_gallery()
    example = gallery[default_index(gallery)]  # what the sidebar opens by default
    return results.CrystalFile.from_path(example.path, origin="example", title=example.name, source=example.source)


def test_streamlit_runs_the_launcher_as_an_app_of_the_page():
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(ROOT / "app" / "serve.py")
    assert found.is_asgi_app and found.app_name == "app"
    assert not discover_asgi_app(ROOT / "app" / "Home.py").is_asgi_app  # the page itself stays a plain script


def test_the_launcher_serves_the_home_page(serve):
    assert serve.app._resolve_script_path() == ROOT / "app" / "Home.py"


def test_warm_up_fills_the_caches_of_the_first_page(serve, monkeypatch):
    for cached in (results._read_cached, results._explain_cached, results._symmetry_cached):
        cached.clear()  # so that only the warm-up can have filled them
    assert serve.warm_up() == []

    def computed_again(*args, **kwargs):
        raise AssertionError("the first page computed what the warm-up should have cached")

    # the first page's calls are served from the caches: nothing is read, predicted or analysed again
    monkeypatch.setattr(results, "read_structure", computed_again)
    monkeypatch.setattr(results, "bounded_explain", computed_again)
    monkeypatch.setattr(results, "analyze_symmetry", computed_again)
    predictor, error = results.get_predictor()
    assert error is None
    crystal = _opening_crystal()
    explanation = results.explain_crystal(crystal, predictor)
    assert explanation["formation_energy_per_atom"] < 0 and explanation["band_gap"] > 1  # SrTiO3: an insulator
    config = predictor.graph_config
    view = results.symmetry_view(crystal, float(config.symprec), float(config.angle_tolerance))
    assert view.report.space_group_number == 221  # cubic perovskite, Pm-3m


def test_a_failing_step_is_logged_and_the_others_still_run(serve, monkeypatch, caplog):
    def broken():
        raise OSError("the library file is damaged")

    monkeypatch.setattr(library_panel, "load_library", broken)
    results._explain_cached.clear()
    assert serve.warm_up() == ["library"]
    assert "warm-up step 'library' failed" in caplog.text
    monkeypatch.setattr(results, "bounded_explain", lambda *a, **k: pytest.fail("not cached"))
    predictor, _ = results.get_predictor()
    assert results.explain_crystal(_opening_crystal(), predictor)["band_gap"] > 1
