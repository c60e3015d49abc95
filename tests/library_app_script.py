"""A tiny Streamlit page that wires app/library_panel.py as Home.py will (run by tests/test_library.py's AppTest)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.library_panel import (  # noqa: E402
    crystal_file,
    library_search,
    load_library,
    nearest_table,
    parity_panel,
    prediction_cards,
    results_table,
)

library, error = load_library()
if library is None:
    st.error(error)
    st.stop()
choice = library_search(library)
if choice.filters:
    results_table(library, choice.filters)
if choice.material_id:
    opened = crystal_file(library, choice.material_id)
    st.header(opened.title, anchor=False)
    prediction_cards(library, choice.material_id)
    nearest_table(library, choice.material_id, exclude=choice.material_id)
parity_panel(library, choice.filters)
