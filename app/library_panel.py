"""The crystal library in the app: search the 33,064 known crystals, open one, compare with DFT, nearest crystals.

Pure functions (testable without a page) build the data; the widgets draw it. All take a
:class:`sen.library.Library` (from :func:`load_library`):

* :func:`library_search` (sidebar): a search box (formula or elements) with filters; returns a
  :class:`LibraryChoice`: the material id picked (or given by the link ``?crystal=mp-804``) and the filters;
* :func:`results_table`: the matching crystals with their DFT values and predictions (sortable);
* :func:`crystal_file`: a picked crystal as a ``CrystalFile`` (pymatgen JSON) for the page's other panels;
* :func:`prediction_cards` (:func:`card_data`): the DFT value beside the prediction, the error, and which
  part of the model's split the crystal is in ("training crystal: this is not a test");
* :func:`parity_panel` (:func:`parity_figure`): "How well does the model do here?", the model on the test
  crystals matching the same filters, from the stored predictions (nothing recomputed);
* :func:`nearest_table` (:func:`nearest_frame`): the nearest known crystals in the model's embedding, with the
  applicability-domain warning.

Anything the user typed is shown through :func:`app.common.literal` (Markdown) or as plain data; no HTML.
Data: Materials Project, CC BY 4.0, cite A. Jain et al., APL Materials 1, 011002 (2013).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.common import literal
from sen.io import structure_to_json
from sen.library import SPLIT_NOTES, TARGETS, UNITS, Library, LibraryError, comparison
from sen.targets import TARGET_TITLES

CITATION = "Materials Project data (CC BY 4.0); cite A. Jain et al., APL Materials 1, 011002 (2013)."
LABELS = TARGET_TITLES
ANY = "any"
KINDS = (ANY, "metal", "insulator")
SYSTEMS = (ANY, "triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
MAX_CHOICES = 500  # picker entries; the table shows every match


@dataclass
class LibraryChoice:
    """What the sidebar search gives the page: the crystal to open (or None) and the filters of the search."""

    material_id: str | None
    filters: dict = field(default_factory=dict)
    error: str | None = None  # a one-line problem with the search (shown in the sidebar already)


@st.cache_resource(show_spinner=False)
def load_library() -> tuple[Library | None, str | None]:
    """The shipped library, loaded once per server, and a one-line error if it cannot be loaded or was built with
    another model than the shipped one (its predictions and embeddings would not be this model's)."""
    try:
        library = Library.load()
        library.check_model()
        return library, None
    except (LibraryError, FileNotFoundError) as exc:
        return None, str(exc)


# ----------------------------------------------------------------------------- search (sidebar)


def filters_from(text: str = "", only: bool = False, spacegroup: str = "", system: str = ANY,
                 gap: tuple[float, float] | None = None, kind: str = ANY) -> dict:  # fmt: skip
    """Keyword arguments of :meth:`Library.search` from the widgets' values (empty ones left out)."""
    f: dict = {}
    if text and text.strip():
        f["query"] = text.strip()
        f["only"] = bool(only)
    if spacegroup and str(spacegroup).strip():
        f["spacegroup"] = str(spacegroup).strip()
    if system and system != ANY:
        f["system"] = system
    if gap is not None:
        f["gap"] = (float(gap[0]), float(gap[1]))
    if kind == "metal":
        f["metal"] = True
    elif kind == "insulator":
        f["metal"] = False
    return f


def search(library: Library, filters: dict):
    """The matching crystals (DataFrame); a malformed filter raises :class:`LibraryError` (one line)."""
    if not filters:
        return library.frame.iloc[0:0]
    return library.search(**filters)


def crystal_from_link(library: Library, params=None) -> str | None:
    """The material id of the ``?crystal=mp-804`` link, if it names a library crystal."""
    params = st.query_params if params is None else params
    value = params.get("crystal")
    if isinstance(value, list):
        value = value[-1] if value else None
    value = str(value).strip() if value else None
    return value if value and value in library else None


def library_search(library: Library, key: str = "library") -> LibraryChoice:
    """The sidebar's library search: a formula or elements box, filters, the matches, a crystal to open.

    The picked crystal is written to the link (``?crystal=mp-804``), so a page can be shared; a link opened
    with ``?crystal=...`` preselects it.
    """
    sb = st.sidebar
    sb.subheader("Known crystals", anchor=False)
    text = sb.text_input("Formula or elements", key=f"{key}_text", placeholder="LiFePO4  or  Li Fe P O",
                         help="A formula matches its reduced formula; elements match crystals containing all of them.")  # fmt: skip
    only = sb.checkbox("Only these elements", key=f"{key}_only")
    col_a, col_b = sb.columns(2)
    spacegroup = col_a.text_input("Space group", key=f"{key}_sg", placeholder="225 or Fm-3m")
    system = col_b.selectbox("Crystal system", SYSTEMS, key=f"{key}_system")
    use_gap = sb.checkbox("Band-gap range (DFT)", key=f"{key}_use_gap")
    gap = sb.slider("Band gap (eV)", 0.0, 10.0, (1.0, 3.0), 0.1, key=f"{key}_gap") if use_gap else None
    kind = sb.radio("Kind (DFT)", KINDS, horizontal=True, key=f"{key}_kind")
    filters = filters_from(text, only, spacegroup, system, gap, kind)
    linked = crystal_from_link(library)
    try:
        matches = search(library, filters)
    except LibraryError as exc:
        sb.error(literal(str(exc)))
        return LibraryChoice(linked, {}, str(exc))
    if filters:
        sb.caption(f"{len(matches):,} of {len(library):,} crystals match.")
    ids = list(matches["material_id"].head(MAX_CHOICES))
    if linked and linked not in ids:
        ids = [linked, *ids]
    if not ids:
        return LibraryChoice(None, filters)
    formulas = dict(zip(library.frame["material_id"], library.frame["formula"], strict=True))
    picked = sb.selectbox("Open a crystal", [None, *ids], index=(ids.index(linked) + 1 if linked else 0),
                          key=f"{key}_pick",
                          format_func=lambda m: "—" if m is None else f"{m}  {formulas.get(m, '')}")  # fmt: skip
    if picked is not None and st.query_params.get("crystal") != picked:
        st.query_params["crystal"] = picked
    elif picked is None and "crystal" in st.query_params:
        del st.query_params["crystal"]
    return LibraryChoice(picked, filters)


# ----------------------------------------------------------------------------- results table


def results_frame(matches) -> pd.DataFrame:
    """The results table's columns (units in the names) with a ``?crystal=`` link per row."""
    return pd.DataFrame({
        "open": "?crystal=" + matches["material_id"].astype(str),
        "id": matches["material_id"].to_numpy(),
        "formula": matches["formula"].to_numpy(),
        "space group": [f"{s} ({n})" for s, n in zip(matches["space_group_symbol"], matches["space_group_number"],
                                                     strict=True)],  # fmt: skip
        "system": matches["crystal_system"].to_numpy(),
        "atoms": matches["n_atoms"].to_numpy(),
        "DFT gap (eV)": matches["band_gap"].to_numpy(),
        "SEN gap (eV)": matches["pred_band_gap"].to_numpy(),
        "DFT formation energy (eV/atom)": matches["formation_energy_per_atom"].to_numpy(),
        "SEN formation energy (eV/atom)": matches["pred_formation_energy_per_atom"].to_numpy(),
        "split": matches["split"].to_numpy(),
    })  # fmt: skip


def results_table(library: Library, filters: dict) -> pd.DataFrame:
    """The crystals matching ``filters`` as a sortable table (click a header); returns the table."""
    try:
        table = results_frame(search(library, filters))
    except LibraryError as exc:
        st.error(literal(str(exc)))
        return results_frame(library.frame.iloc[0:0])
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "open": st.column_config.LinkColumn("open", display_text="open", width="small"),
        "DFT gap (eV)": st.column_config.NumberColumn(format="%.3f"),
        "SEN gap (eV)": st.column_config.NumberColumn(format="%.3f"),
        "DFT formation energy (eV/atom)": st.column_config.NumberColumn(format="%.3f"),
        "SEN formation energy (eV/atom)": st.column_config.NumberColumn(format="%.3f"),
    })  # fmt: skip
    st.caption(CITATION)
    return table


# ----------------------------------------------------------------------------- one crystal


def crystal_file(library: Library, material_id: str):
    """A library crystal as the page's ``CrystalFile`` (pymatgen JSON, exact coordinates), origin ``library``."""
    from app.results import CrystalFile

    row = library.get(material_id)
    data = structure_to_json(library.structure(material_id)).encode("utf-8")
    return CrystalFile.from_bytes(f"{row['material_id']}.json", data, origin="library",
                                  title=f"{row['material_id']} {row['formula']}",
                                  source=f"Materials Project {row['material_id']}; {CITATION}")  # fmt: skip


def card_data(library: Library, material_id: str) -> dict:
    """Everything a prediction card shows for a library crystal.

    ``targets``: per target, ``label``, ``unit``, ``dft``, ``predicted``, ``spread``, ``error`` (prediction
    minus DFT); ``split`` and ``split_note`` (``"training crystal: ... not a test"`` ...), ``is_test``.
    """
    row = library.get(material_id)
    targets = []
    for c in comparison(row):
        targets.append(dict(c, label=LABELS[c["target"]]))
    return {"material_id": row["material_id"], "formula": row["formula"], "split": row["split"],
            "split_note": SPLIT_NOTES.get(row["split"], ""), "is_test": row["split"] == "test",
            "targets": targets}  # fmt: skip


def prediction_cards(library: Library, material_id: str) -> dict:
    """Cards with the DFT value beside the prediction and the error, and the split; returns :func:`card_data`."""
    data = card_data(library, material_id)
    note = data["split_note"].capitalize() + "."
    if data["split"] == "train":
        st.warning(note)
    elif data["split"] == "test":
        st.success(note)
    else:
        st.info(note)
    for col, t in zip(st.columns(len(data["targets"])), data["targets"], strict=True):
        with col:
            st.markdown(f"**{t['label']}** ({t['unit']})")
            left, right = st.columns(2)
            left.metric("DFT (Materials Project)", "—" if t["dft"] is None else f"{t['dft']:.3f}")
            spread = "" if t["spread"] is None else f" ± {t['spread']:.3f}"
            right.metric("SEN", "—" if t["predicted"] is None else f"{t['predicted']:.3f}{spread}",
                         delta=None if t["error"] is None else f"{t['error']:+.3f} error",
                         delta_color="off")  # fmt: skip
    return data


# ----------------------------------------------------------------------------- parity plot


def parity_points(library: Library, filters: dict, target: str) -> pd.DataFrame:
    """The test crystals matching ``filters``: ``material_id``, ``formula``, ``dft``, ``predicted`` for ``target``."""
    f = dict(filters)
    f.pop("split", None)
    rows = library.search(split="test", **f)
    ok = np.isfinite(rows["pred_" + target].to_numpy(dtype=float))
    rows = rows[ok]
    return pd.DataFrame({"material_id": rows["material_id"].to_numpy(), "formula": rows["formula"].to_numpy(),
                         "dft": rows[target].to_numpy(dtype=float),
                         "predicted": rows["pred_" + target].to_numpy(dtype=float)})  # fmt: skip


def parity_figure(library: Library, filters: dict, target: str) -> go.Figure:
    """The shipped model on the test crystals matching ``filters``: predicted against DFT, with y = x and the MAE."""
    pts = parity_points(library, filters, target)
    unit = UNITS[target]
    fig = go.Figure()
    if len(pts):
        lo = float(min(pts["dft"].min(), pts["predicted"].min()))
        hi = float(max(pts["dft"].max(), pts["predicted"].max()))
        pad = 0.05 * (hi - lo or 1.0)
        fig.add_trace(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines", name="y = x",
                                 line={"color": "grey", "dash": "dash"}, hoverinfo="skip"))  # fmt: skip
        fig.add_trace(go.Scattergl(
            x=pts["dft"], y=pts["predicted"], mode="markers", name="test crystals", marker={"size": 5, "opacity": 0.6},
            # one string per point: a 2-D object array costs plotly's JSON encoder 10x more on every page
            customdata=[f"{m} {f}" for m, f in zip(pts["material_id"], pts["formula"], strict=True)],
            hovertemplate="%{customdata}<br>DFT %{x:.3f}<br>SEN %{y:.3f}<extra></extra>",
        ))  # fmt: skip
        mae = float(np.abs(pts["predicted"] - pts["dft"]).mean())
        title = f"{LABELS[target]}: {len(pts):,} test crystals, MAE {mae:.3f} {unit}"
    else:
        title = f"{LABELS[target]}: no test crystal matches"
    fig.update_layout(title=title, xaxis_title=f"DFT ({unit})", yaxis_title=f"SEN ({unit})", height=380,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False)  # fmt: skip
    return fig


@st.cache_resource(max_entries=64, show_spinner=False)
def _parity_figures(_library: Library, library_key: str, filters_key: str) -> list[go.Figure]:
    """Both parity figures for one search, built once per server and shared by every session (read only)."""
    filters = json.loads(filters_key)
    return [parity_figure(_library, filters, t) for t in TARGETS]


def parity_panel(library: Library, filters: dict) -> None:
    """The "How well does the model do here?" panel: parity plots of both targets on the matching test crystals."""
    st.subheader("How well does the model do here?", anchor=False)
    try:
        key = json.dumps(filters, sort_keys=True, default=list)
        figures = _parity_figures(library, str(library.path), key)
    except LibraryError as exc:
        st.error(literal(str(exc)))
        return
    for col, fig in zip(st.columns(len(figures)), figures, strict=True):
        col.plotly_chart(fig, width="stretch")
    st.caption("The shipped model's stored predictions on the test crystals (never seen in training) that match "
               "the search; all test crystals when there is no search. " + CITATION)  # fmt: skip


# ----------------------------------------------------------------------------- nearest crystals


def nearest_frame(library: Library, query, k: int = 5, predictor=None, exclude: str | None = None):
    """(table, warning): the ``k`` nearest library crystals to ``query`` (an id or a Structure) with display
    columns, and the applicability-domain warning (None when the query is within the model's experience)."""
    near = library.nearest(query, k=k, predictor=predictor, exclude=exclude)
    r = near.rows
    table = pd.DataFrame({
        "open": "?crystal=" + r["material_id"].astype(str),
        "distance": r["distance"].to_numpy(),
        "id": r["material_id"].to_numpy(),
        "formula": r["formula"].to_numpy(),
        "space group": r["space_group"].to_numpy(),
        "DFT gap (eV)": r["band_gap"].to_numpy(),
        "SEN gap error (eV)": r["error_band_gap"].to_numpy(),
        "DFT formation energy (eV/atom)": r["formation_energy_per_atom"].to_numpy(),
        "SEN formation energy error (eV/atom)": r["error_formation_energy_per_atom"].to_numpy(),
        "split": r["split"].to_numpy(),
    })  # fmt: skip
    return table, near.warning


def nearest_table(library: Library, query, predictor=None, k: int = 5, exclude: str | None = None):
    """The nearest known crystals (for an opened library crystal pass its id and ``exclude=`` it; for an upload
    pass its Structure and the page's predictor); returns the table, or None when it cannot be computed."""
    st.subheader("Nearest known crystals", anchor=False)
    try:
        table, warning = nearest_frame(library, query, k, predictor, exclude)
    except (LibraryError, ValueError) as exc:  # StructureError and a model other than the library's
        st.info(literal(str(exc)))
        return None
    if warning:
        st.warning(literal(warning.capitalize()))
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "open": st.column_config.LinkColumn("open", display_text="open", width="small"),
        "distance": st.column_config.NumberColumn(format="%.2f"),
    })  # fmt: skip
    st.caption("Distance in the model's own crystal representation (its six networks' features, PCA); the errors "
               "are the model's on those crystals. " + CITATION)  # fmt: skip
    return table
