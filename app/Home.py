"""SEN Crystal Explorer: pick or upload a crystal; see the prediction, the structure, its
symmetry clusters and the capsule routing. Run with ``streamlit run app/Home.py``.

The page reads like it looks, top to bottom; each section is one function in app/panels.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/Home.py` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import panels, viewer  # noqa: E402
from app.gallery import load_gallery  # noqa: E402
from app.results import get_predictor  # noqa: E402

st.set_page_config(page_title="SEN Crystal Explorer", layout="wide")
started = time.perf_counter()

st.title("SEN Crystal Explorer", anchor=False)
st.caption(
    "Band gap and formation energy from a symmetry-aware capsule network (SEN), the crystal's symmetry "
    "from spglib, and what the network did with it."
)

predictor, model_error = get_predictor()
settings = panels.sidebar(load_gallery(), predictor)

if len(settings.uploads) > 1:
    panels.several_files(settings.uploads, predictor)

loaded = panels.load_structure(settings)
if loaded is not None:
    crystal, structure = loaded
    panels.header(crystal, structure)
    explanation = panels.prediction(crystal, structure, predictor, model_error)

    if settings.colour_mode == viewer.SIDE_BY_SIDE:  # two 3D views need the full width
        view_column, symmetry_column = st.container(), st.container()
    else:
        view_column, symmetry_column = st.columns([1, 1])
    with symmetry_column:
        sym = panels.symmetry(crystal, structure, settings, explanation)
    with view_column:
        panels.structure_view(crystal, structure, settings, sym, explanation)

    routing_data = panels.routing(crystal, structure, explanation, predictor)
    panels.downloads(crystal, structure, explanation, predictor, sym, routing_data)
    panels.footer(crystal, structure, predictor, time.perf_counter() - started)
