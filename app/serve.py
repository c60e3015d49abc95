"""Serve the app ready for its first visitor: ``streamlit run app/serve.py``.

``streamlit run app/Home.py`` serves the same page, but its server imports torch, pymatgen and
plotly, loads the model and the crystal library, and computes the opening crystal only when the
first visitor's page runs: that visitor waits for all of it (about 3 s on the development machine,
benchmarks/README.md). This launcher is a Streamlit ``st.App`` of app/Home.py whose start-up (the
server's ASGI lifespan) does that work first, so the server answers its first request only when it
is ready and the first visitor's page is served like anyone's. A step that fails here is only
logged: the page reports the same failure in its own words when it runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/serve.py` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

# Streamlit warns once per thread that calls a cached function outside a page ("missing ScriptRunContext");
# here that is the point: the warm-up fills the caches before any page runs.
_CONTEXT_LOG = "streamlit.runtime.scriptrunner_utils.script_run_context"


def warm_up() -> list[str]:
    """Import what the page imports, load the model and the library, and compute the opening gallery
    crystal (prediction and symmetry) into the caches the page reads. Returns the steps that failed."""
    from app.common import setup_logging

    setup_logging()
    failed = []

    def step(name, func):
        try:
            return func()
        except Exception:
            logging.getLogger("sen_app").warning("warm-up step %r failed; the page will do it", name, exc_info=True)
            failed.append(name)
            return None

    # the modules app/Home.py imports (importing Home itself would run the page)
    step("imports", _import_page_modules)
    from app.gallery import default_index, load_gallery
    from app.library_panel import load_library
    from app.results import CrystalFile, explain_crystal, get_predictor, symmetry_view

    predictor = step("model", lambda: get_predictor()[0])
    step("library", load_library)
    gallery = step("gallery", load_gallery)
    if gallery:
        # the crystal the sidebar opens by default (app/sidebar.py), with the model's tolerances
        example = gallery[default_index(gallery)]
        crystal = CrystalFile.from_path(example.path, origin="example", title=example.name, source=example.source)
        if predictor is not None:
            step("prediction", lambda: explain_crystal(crystal, predictor))
            config = predictor.graph_config
            step("symmetry", lambda: symmetry_view(crystal, float(config.symprec), float(config.angle_tolerance)))
    return failed


def _import_page_modules() -> None:
    import app.batch
    import app.downloads_panel
    import app.library_panel
    import app.prediction_panel
    import app.routing_panel
    import app.sidebar
    import app.symmetry_panel
    import app.teaching_panel
    import app.view_panel
    import app.viewer  # noqa: F401


@asynccontextmanager
async def _ready_first(_app) -> AsyncIterator[None]:
    started = time.perf_counter()
    context_log = logging.getLogger(_CONTEXT_LOG)
    level = context_log.level
    context_log.setLevel(logging.ERROR)
    try:
        failed = await asyncio.to_thread(warm_up)
    finally:
        context_log.setLevel(level)
    logging.getLogger("sen_app").info("warm-up took %.1f s%s", time.perf_counter() - started, f"; failed: {failed}" if failed else "")
    yield


app = st.App(ROOT / "app" / "Home.py", lifespan=_ready_first)
