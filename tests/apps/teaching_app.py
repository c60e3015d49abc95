"""A page that wires the teaching panel (app/teaching_panel.py) the way Home.py is meant to, for AppTest
and the browser test: link, sidebar, changes, prediction, symmetry change, 3D view with symmetry
elements, comparison, link written back."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import teaching_panel  # noqa: E402
from app.gallery import load_gallery  # noqa: E402
from app.prediction_panel import header, load_structure, prediction  # noqa: E402
from app.results import get_predictor  # noqa: E402
from app.sidebar import sidebar  # noqa: E402

st.set_page_config(page_title="SEN teaching panel", layout="wide")
started = time.perf_counter()
gallery = load_gallery()
predictor, model_error = get_predictor()
teaching_panel.read_link(gallery)
settings = sidebar(gallery, predictor)
loaded = load_structure(settings)
if loaded is not None:
    crystal, structure = loaded
    edited = teaching_panel.teaching_controls(crystal, structure, predictor, settings.symprec, settings.angle_tolerance)
    header(edited.crystal, edited.structure)
    prediction(edited.crystal, edited.structure, predictor, model_error)
    teaching_panel.symmetry_change(edited)
    show_elements = teaching_panel.symmetry_elements_toggle()
    teaching_panel.elements_view(edited.crystal, edited.structure, settings, show_elements)
    teaching_panel.compare_view(edited, gallery, predictor, settings.symprec, settings.angle_tolerance)
    teaching_panel.write_link(edited, gallery, settings)
    st.caption(f"Teaching page complete: {edited.crystal.title} in {1000 * (time.perf_counter() - started):.0f} ms")
