"""SEN Crystal Explorer: pick or upload a crystal; see the prediction, the structure, its
symmetry clusters and the capsule routing. Run with ``streamlit run app/serve.py`` (this page, served
once the model, the library and the first crystal are loaded: app/serve.py) or ``streamlit run app/Home.py``.

The page reads like it looks, top to bottom: the sidebar (app/sidebar.py), a table when several
files were uploaded at once (app/batch.py), then one crystal in detail: prediction
(app/prediction_panel.py), 3D view and symmetry side by side (app/view_panel.py,
app/symmetry_panel.py), capsule routing (app/routing_panel.py), a comparison with a second crystal
and downloads (app/downloads_panel.py). The sidebar's teaching controls (app/teaching_panel.py) distort
or substitute the crystal, and the page's state lives in its address (a link to share). A section that
fails shows one line and the others go on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/Home.py` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import teaching_panel, viewer  # noqa: E402
from app.batch import several_files  # noqa: E402
from app.common import setup_logging  # noqa: E402
from app.downloads_panel import downloads  # noqa: E402
from app.gallery import load_gallery  # noqa: E402
from app.library_panel import (  # noqa: E402
    crystal_file,
    library_search,
    load_library,
    nearest_table,
    parity_panel,
    prediction_cards,
    results_table,
)
from app.prediction_panel import footer, header, load_structure, prediction  # noqa: E402
from app.results import get_predictor  # noqa: E402
from app.routing_panel import picked_network, routing  # noqa: E402
from app.sidebar import sidebar, with_library_pick  # noqa: E402
from app.symmetry_panel import symmetry  # noqa: E402
from app.view_panel import structure_view  # noqa: E402

setup_logging()
st.set_page_config(page_title="SEN Crystal Explorer", layout="wide")
started = time.perf_counter()

st.title("SEN Crystal Explorer", anchor=False)
st.caption(
    "Band gap and formation energy from a symmetry-aware capsule network (SEN), the crystal's symmetry "
    "from spglib, and what the network did with it."
)

predictor, model_error = get_predictor()
gallery = load_gallery()
teaching_panel.read_link(gallery)  # a shared link sets the page's state (first run of a session only)
settings = sidebar(gallery, predictor)
library, library_error = load_library()  # the 33,064 known crystals (assets/library)
choice = library_search(library) if library is not None else None
if library is None:
    st.sidebar.caption(f"The crystal library is not available: {library_error}")
picked = choice.material_id if choice is not None else None  # a known crystal (search, or ?crystal=mp-...)
settings = with_library_pick(settings, crystal_file(library, picked) if picked else None)
opened = picked if settings.crystal is not None and settings.crystal.origin == "library" else None

with st.container():  # always one element here, so that what follows keeps its place
    if len(settings.batch) > 1:
        several_files(settings.batch, predictor)
    if choice is not None and choice.filters:
        results_table(library, choice.filters)

loaded = load_structure(settings)
edited = None
if loaded is not None:
    # the sidebar's "Teach symmetry" controls may distort or substitute the crystal: the page shows the result
    edited = teaching_panel.teaching_controls(*loaded, predictor, settings.symprec, settings.angle_tolerance)
    crystal, structure = edited.crystal, edited.structure
    # One container above the 3D view, whatever it holds: the view keeps its place on the page from one
    # rerun to the next, so it is redrawn in place rather than rebuilt (app/viewer.py)
    with st.container():
        header(crystal, structure)
        explanation = prediction(crystal, structure, predictor, model_error)
        if opened and not edited.changed:  # DFT beside the prediction, and whether the model trained on it
            prediction_cards(library, opened)
        teaching_panel.symmetry_change(edited)
    show_elements = teaching_panel.symmetry_elements_toggle()

    if settings.colour_mode == viewer.SIDE_BY_SIDE:  # two 3D views need the full width
        view_column, symmetry_column = st.container(), st.container()
    else:
        view_column, symmetry_column = st.columns([1, 1])
    with symmetry_column:
        sym = symmetry(crystal, structure, settings, explanation)
    with view_column:
        # capsule colours and atom details of the network picked in the routing panel below (first by default)
        # the view keeps the user's rotation while the crystal as read is distorted, recoloured or re-picked
        structure_view(crystal, structure, settings, sym, picked_network(explanation), show_elements,
                       camera=edited.original.digest)  # fmt: skip

    routing_data = routing(crystal, structure, explanation, predictor)
    if library is not None:  # the known crystals the model considers most similar, and its errors on them
        # a known crystal by its id; any other by the embedding its explanation already holds (no second pass)
        query = opened if opened and not edited.changed else (explanation["embedding"] if explanation else structure)
        nearest_table(library, query, predictor=predictor, exclude=opened)
    teaching_panel.compare_view(edited, gallery, predictor, settings.symprec, settings.angle_tolerance)
    downloads(crystal, structure, explanation, predictor, sym, routing_data)
    teaching_panel.write_link(edited, gallery, settings, extra={"crystal": opened} if opened else None)
    footer(crystal, structure, predictor, time.perf_counter() - started)
if library is not None:
    parity_panel(library, choice.filters if choice is not None else {})  # "how well does the model do here?"
