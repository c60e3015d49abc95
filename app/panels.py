"""The panels of the explorer page, one function each, in the order they appear.

A panel that fails shows one ``st.error`` line and returns None; the rest of the page
goes on (see :func:`panel`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
from pymatgen.core import Structure

from app import charts, viewer
from app.gallery import Example, default_index
from app.results import (
    TITLES,
    UNITS,
    CrystalFile,
    SymmetryView,
    coverage_warnings,
    explain_crystal,
    model_test_mae,
    orbit_table,
    predict_files,
    prediction_record,
    read_crystal,
    records_csv,
    routing_csv,
    routing_data,
    spread_warning,
    symmetry_view,
    to_json,
    unique_orbit_names,
)
from sen.errors import StructureError
from sen.predict import Predictor
from sen.symmetry import DEFAULT_ANGLE_TOLERANCE, DEFAULT_SYMPREC

UPLOAD_HELP = (
    "CIF, POSCAR/CONTCAR, extended XYZ (with a Lattice) or pymatgen JSON; one crystal per file, "
    "at most 5 MB and 500 atoms. Several files give a table of predictions."
)
SHOW_UPLOADS, SHOW_EXAMPLE = "Uploaded file", "Example crystal"
CANVAS_HEIGHT = 420
MAX_TABLE_FILES = 200  # files predicted in one upload (bounds the work one visitor can cause)


def panel(name: str) -> Callable:
    """Decorator: a failing panel shows one error line instead of a traceback, and returns None."""

    def wrap(draw: Callable) -> Callable:
        @functools.wraps(draw)
        def guarded(*args, **kwargs):
            try:
                return draw(*args, **kwargs)
            except StructureError as exc:
                st.error(literal(str(exc)))
            except Exception as exc:  # never a traceback on the page
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                st.error(f"The {name} panel could not be shown: {type(exc).__name__}: {literal(first)}")
            return None

        return guarded

    return wrap


def literal(text: str) -> str:
    """Text that Markdown shows as it is: file names, error messages, symbols such as P2_12_12_1.

    Streamlit renders st.error, st.caption, ... as Markdown; escaping keeps ``_``, ``*``,
    ``[...]`` (Streamlit colour directives), ``$`` (LaTeX) and ``<`` literal.
    """
    return "".join("\\" + ch if ch in "\\`*_[]|<>~$#" else ch for ch in str(text))


# ---------------------------------------------------------------------------- sidebar


@dataclass
class Settings:
    """Everything the sidebar decides."""

    crystal: CrystalFile | None  # the crystal to show in detail (None: nothing to show)
    example: CrystalFile | None  # the gallery choice (shown when an upload cannot be read)
    uploads: list[CrystalFile] = field(default_factory=list)
    symprec: float = DEFAULT_SYMPREC
    angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE
    colour_mode: str = viewer.COLOUR_MODES[0]
    supercell: tuple[int, int, int] = (1, 1, 1)
    label_atoms: bool = False


def _show(choice: str) -> None:
    st.session_state["show_source"] = choice


def sidebar(gallery: list[Example], predictor: Predictor | None) -> Settings:
    """Input and view controls; returns the settings for this run."""
    side = st.sidebar
    side.header("Crystal")
    example = None
    if gallery:
        pick = side.selectbox(
            "Example crystal",
            range(len(gallery)),
            index=default_index(gallery),
            format_func=lambda i: gallery[i].label,
            key="example",
            on_change=_show,
            args=(SHOW_EXAMPLE,),
        )
        chosen = gallery[pick]
        if chosen.source:
            side.caption(literal(f"Source: {chosen.source}"))
        example = CrystalFile.from_path(chosen.path, origin="example", title=chosen.name, source=chosen.source)
    else:
        side.warning("No example crystals found in assets/examples/; upload a file.")
    files = side.file_uploader(
        "... or upload your own" if gallery else "Upload crystal files",
        accept_multiple_files=True,
        key="uploads",
        help=UPLOAD_HELP,
        on_change=_show,
        args=(SHOW_UPLOADS,),
    )
    uploads = [CrystalFile.from_bytes(f.name, f.getvalue()) for f in files or []]
    crystal = example
    if uploads:
        show = SHOW_UPLOADS
        if example is not None:
            show = side.radio("Show in detail", (SHOW_UPLOADS, SHOW_EXAMPLE), key="show_source", horizontal=True)
        if show == SHOW_UPLOADS:
            index = 0
            if len(uploads) > 1:
                index = side.selectbox(
                    "Uploaded file to inspect", range(len(uploads)), format_func=lambda i: uploads[i].name
                )
            crystal = uploads[index]

    side.header("Symmetry tolerance")
    model_symprec = predictor.graph_config.symprec if predictor else DEFAULT_SYMPREC
    model_angle = predictor.graph_config.angle_tolerance if predictor else DEFAULT_ANGLE_TOLERANCE
    symprec = side.number_input(
        "Distance tolerance symprec (Å)",
        min_value=0.0001,
        max_value=1.0,
        value=float(model_symprec),
        step=0.005,
        format="%.4f",
        key="symprec",
        help="How far (Å) atoms may be from perfectly symmetric positions and still count as equivalent.",
    )
    angle = side.number_input(
        "Angle tolerance (°)",
        min_value=0.1,
        max_value=30.0,
        value=float(model_angle),
        step=1.0,
        key="angle_tolerance",
        help="How far (degrees) lattice angles may be from ideal values.",
    )

    side.header("3D view")
    mode = side.radio("Colour atoms by", viewer.COLOUR_MODES, key="colour_mode")
    side.caption("Supercell (repetitions along a, b, c)")
    columns = side.columns(3)
    supercell = tuple(
        int(col.number_input(axis, min_value=1, max_value=3, value=1, step=1, key=f"supercell_{axis}"))
        for col, axis in zip(columns, "abc", strict=True)
    )
    label_atoms = side.checkbox("Label atoms with their orbit", key="label_atoms")
    return Settings(crystal, example, uploads, float(symprec), float(angle), mode, supercell, label_atoms)


# ---------------------------------------------------------------------------- structure


def load_structure(settings: Settings) -> tuple[CrystalFile, Structure] | None:
    """Read the crystal to show; a bad upload gives its reason and the example is shown instead."""
    crystal = settings.crystal
    if crystal is None:
        st.info("Upload a crystal file in the sidebar to start.")
        return None
    try:
        return crystal, read_crystal(crystal)
    except StructureError as exc:
        st.error(literal(f"{crystal.name}: {exc}"))
    if crystal.origin == "example" or settings.example is None:
        return None
    st.info(literal(f"Showing the example crystal {settings.example.title} instead."))
    try:
        return settings.example, read_crystal(settings.example)
    except StructureError as exc:
        st.error(literal(f"{settings.example.name}: {exc}"))
        return None


def header(crystal: CrystalFile, structure: Structure) -> None:
    """Name of the crystal, its formula and where it comes from."""
    st.subheader(literal(crystal.title), anchor=False)
    origin = f"example crystal, source: {crystal.source}" if crystal.origin == "example" else "uploaded file"
    st.caption(literal(f"{structure.composition.reduced_formula} · {len(structure)} atoms in the cell · {origin}"))


# ---------------------------------------------------------------------------- prediction


@panel("prediction")
def prediction(crystal: CrystalFile, structure: Structure, predictor: Predictor | None, model_error: str | None):
    """Prediction cards (band gap, formation energy, metal / insulator) with the test MAE."""
    if predictor is None:
        st.error(literal(f"No prediction: {model_error}"))
        return None
    explanation = explain_crystal(crystal, predictor)
    card = predictor.card
    columns = st.columns(3)
    for column, target in zip(columns, ("band_gap", "formation_energy_per_atom"), strict=False):
        if target not in explanation:
            continue
        unit = UNITS[target]
        digits = 2 if target == "band_gap" else 3
        column.metric(
            TITLES[target],
            f"{explanation[target]:.{digits}f} {unit}",
            help=_TARGET_HELP[target],
        )
        mae = model_test_mae(card, target)
        caption = (
            f"± {mae:.{digits}f} {unit} (mean absolute error on the test set)"
            if mae is not None
            else "uncertainty: the test error of these weights has not been measured yet"
        )
        n_networks = predictor.members_for(target)
        if f"{target}_std" in explanation and n_networks > 1:
            spread = explanation[f"{target}_std"]
            caption += f"; the {n_networks} networks spread ± {spread:.{digits + 1}f} {unit}"
        column.caption(caption)
    if "metal_probability" in explanation:
        p_metal = float(explanation["metal_probability"])
        columns[2].metric(
            "Metal or insulator",
            "Metal" if explanation["is_metal"] else "Insulator",
            help="Metal: the predicted band gap is exactly 0 eV (the network's probability of a gap is below 0.5).",
        )
        columns[2].caption(f"probability of a zero gap: {p_metal:.0%}")
    for target in predictor.targets:
        note = spread_warning(card, target, explanation, predictor.members_for(target))
        if note:
            st.warning(note)
    for note in coverage_warnings(structure, card):
        st.warning(note)
    model_card(predictor)
    return explanation


_TARGET_HELP = {
    "band_gap": "Energy gap between valence and conduction band (PBE/GGA level, as in the Materials Project data).",
    "formation_energy_per_atom": "Energy to form the crystal from its elements, per atom; negative means stable "
    "with respect to the elements.",
}


def model_card(predictor: Predictor) -> None:
    """The model card (models/<name>/README.md) in an expander."""
    card = predictor.card
    with st.expander(f"Model card: {predictor.name}"):
        readme = Path(predictor.path).parent / "README.md" if predictor.path else None
        if readme is not None and readme.is_file():
            st.markdown(readme.read_text(encoding="utf-8"))
        else:
            summary = {k: v for k, v in card.items() if k not in ("training_elements", "config")}
            st.caption("No README.md next to the weights; the recorded metrics:")
            st.json(summary, expanded=False)
        if card.get("finished") is False:
            st.caption("These weights come from a training run that had not finished.")


# ---------------------------------------------------------------------------- 3D view


@panel("3D view")
def structure_view(
    crystal: CrystalFile, structure: Structure, settings: Settings, sym: SymmetryView | None, explanation: dict | None
) -> None:
    """Interactive 3D view (3Dmol.js) with the chosen colouring and its legend."""
    st.markdown("**Structure** (drag to rotate, scroll to zoom)")
    if not viewer.local_script_available():
        st.warning(
            "3Dmol.js is not installed in app/static/ (run `npm ci`), so the 3D view loads it from the "
            "jsDelivr CDN and needs internet access."
        )
    report = sym.report if sym is not None else (explanation["symmetry"] if explanation else None)
    colourings = []
    mode = settings.colour_mode
    if mode in ("Wyckoff orbit", viewer.SIDE_BY_SIDE) and report is not None:
        colourings.append(viewer.colour_by_orbit(report.orbit_index, unique_orbit_names(report)))
    if mode in ("Dominant capsule", viewer.SIDE_BY_SIDE):
        if explanation is None:
            st.info("Colouring by capsule needs a prediction; showing elements.")
        else:
            n_caps = explanation["routing"].shape[1]
            colourings.append(viewer.colour_by_capsule(explanation["dominant_capsule"], n_caps))
    if not colourings:
        colourings.append(viewer.colour_by_element(structure))
    supercell = settings.supercell
    if len(structure) * math.prod(supercell) > viewer.MAX_VIEW_ATOMS // 2:
        st.warning(f"{len(structure)} atoms: the supercell is too large to draw quickly; showing one cell.")
        supercell = (1, 1, 1)
    labels = None
    if settings.label_atoms and report is not None:
        names = unique_orbit_names(report)
        labels = [names[int(k)] for k in report.orbit_index]
    page = viewer.build_viewer_html(
        structure, colourings, supercell=supercell, atom_labels=labels, height=CANVAS_HEIGHT, name=crystal.title
    )
    legend_rows = max(1, max(len(c.legend) for c in colourings) // 6 + 1)
    viewer.render_viewer(page, viewer.viewer_height(CANVAS_HEIGHT, legend_rows))
    st.caption(
        "Grey lines: the unit cell (axes a, b, c). Atoms on a cell face are drawn on both faces. "
        "Wyckoff orbit: atoms that the symmetry operations map onto each other share a colour. "
        "Dominant capsule: the learned pattern that receives most of the atom's routing."
    )


# ---------------------------------------------------------------------------- symmetry


@panel("symmetry")
def symmetry(crystal: CrystalFile, structure: Structure, settings: Settings, explanation: dict | None):
    """Space group, point group, lattice parameters and Wyckoff orbits at the chosen tolerance."""
    sym = symmetry_view(crystal, settings.symprec, settings.angle_tolerance)
    report = sym.report
    st.markdown("**Symmetry** (spglib)")
    st.markdown(
        "| Space group | Crystal system | Point group |\n|---|---|---|\n"
        f"| **{literal(report.space_group_symbol)}** (No. {report.space_group_number}) | {report.crystal_system} "
        f"| {literal(report.point_group)} |"
    )
    st.caption(
        f"Formula {structure.composition.reduced_formula} ({structure.composition.formula}) · "
        f"Hall symbol {report.hall_symbol} · {report.n_operations} symmetry operations in this cell · "
        f"tolerance {report.symprec:g} Å, {report.angle_tolerance:g}°"
    )
    given = explanation["symmetry"] if explanation else None
    if given is not None and (given.space_group_number, given.n_orbits) != (report.space_group_number, report.n_orbits):
        st.info(
            f"At this tolerance spglib finds {literal(report.space_group_symbol)}; the network was given "
            f"{literal(given.space_group_symbol)} (No. {given.space_group_number}), found at its own tolerance of "
            f"{given.symprec:g} Å and {given.angle_tolerance:g}°, and its routing below uses those orbits."
        )
    st.table(sym.lattice_rows, hide_index=True, border="horizontal")
    st.markdown("**Wyckoff orbits** (symmetry clusters)")
    st.table(orbit_table(report), hide_index=True, border="horizontal")
    st.caption(
        "A Wyckoff orbit is a set of atoms that symmetry maps onto each other: they are chemically identical "
        "copies. The label `O 3c` reads: oxygen, 3 copies per conventional cell, Wyckoff position c. "
        "Site symmetry is the part of the point group that leaves one atom where it is. Raise the tolerance "
        "to let slightly distorted structures count as more symmetric."
    )
    return sym


# ---------------------------------------------------------------------------- routing


@panel("capsule routing")
def routing(crystal: CrystalFile, structure: Structure, explanation: dict | None, predictor: Predictor | None):
    """Capsule-routing heatmaps with plain-language explanations, and the agreement numbers."""
    st.header("What the network did: capsule routing", anchor=False)
    if explanation is None or predictor is None:
        st.info("The routing needs a prediction, which is not available.")
        return None
    data = routing_data(structure, explanation, predictor.targets)
    st.markdown(
        "SEN sends every atom to a small set of learned *pattern capsules* (like a student sorting atoms into "
        "groups of similar environments), lets the capsules exchange information, and reads the predictions "
        "from them. The charts show those intermediate matrices for this crystal."
    )
    if predictor.n_members > 1:
        st.caption(
            f"This model is an ensemble of {predictor.n_members} networks and each prediction is the mean of the "
            "networks chosen for that property. The "
            "routing shown is that of the first network: capsule k of one network is not capsule k of another, so "
            "routings cannot be averaged. Per-atom contributions split the ensemble's prediction."
        )
    spread, mi, h = data["routing_spread"], data["orbit_capsule_mutual_information_bits"], data["orbit_entropy_bits"]
    columns = st.columns(3)
    columns[0].metric(
        "Routing spread inside orbits",
        f"{spread:.1e}",
        help="Largest difference between the routing of an atom and the mean routing of its Wyckoff orbit.",
    )
    columns[1].metric(
        "Orbit ↔ dominant capsule information",
        f"{mi:.2f} of {h:.2f} bits",
        help="Mutual information between each atom's orbit and its dominant capsule; the second number is the "
        "most it can be (the entropy of the orbit labels).",
    )
    columns[2].metric("Capsules used as dominant", f"{len(set(explanation['dominant_capsule'].tolist()))}")
    st.caption(
        "Symmetry-equivalent atoms have identical surroundings, so a network that respects symmetry routes "
        "them identically: the spread should be about 0. The information number says how well the dominant "
        "capsule tells you which orbit an atom belongs to (equal to the maximum: capsules separate the orbits; "
        "0: they ignore them)."
    )
    key = crystal.digest
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(charts.atom_routing_heatmap(data, key), config={"displaylogo": False})
        st.caption(
            "Each row is one atom, grouped by Wyckoff orbit (red lines separate the orbits); each column is a "
            "capsule. A row shows how the atom's vote is shared between the capsules (rows add up to 1). "
            "Rows of one orbit should look the same."
        )
    with right:
        st.plotly_chart(charts.orbit_routing_heatmap(data, key), config={"displaylogo": False})
        st.caption("The same, averaged over each orbit: which patterns each kind of site is assigned to.")
    columns = st.columns(3)
    with columns[0]:
        st.plotly_chart(charts.capsule_attention_heatmap(data, key), config={"displaylogo": False})
        st.caption(
            "After routing, the capsules look at each other (self-attention): row i shows how much capsule i "
            "takes from every other capsule: the interactions between clusters."
        )
    with columns[1]:
        st.plotly_chart(charts.capsule_activation_bars(data, key), config={"displaylogo": False})
        st.caption("How strongly each capsule is switched on for this crystal (colours as in the 3D view).")
    with columns[2]:
        titles = [TITLES.get(t, t) for t in predictor.targets]
        st.plotly_chart(charts.output_routing_heatmap(data, titles, key), config={"displaylogo": False})
        st.caption("Each prediction is read from the capsules with these weights.")
    return data


# ---------------------------------------------------------------------------- downloads


@panel("downloads")
def downloads(
    crystal: CrystalFile,
    structure: Structure,
    explanation: dict | None,
    predictor: Predictor | None,
    sym: SymmetryView | None,
    data: dict | None,
) -> None:
    """Prediction (JSON, CSV), the standardised CIF and the heatmap data."""
    st.header("Downloads", anchor=False)
    stem = Path(crystal.name).stem or "crystal"
    columns = st.columns(5)
    if explanation is not None and predictor is not None:
        record = prediction_record(crystal, structure, explanation, predictor)
        columns[0].download_button(
            "Prediction (JSON)", to_json(record), f"{stem}_prediction.json", "application/json", on_click="ignore"
        )
        columns[1].download_button(
            "Prediction (CSV)", records_csv([record]), f"{stem}_prediction.csv", "text/csv", on_click="ignore"
        )
    if sym is not None:
        columns[2].download_button(
            "Standardised cell (CIF)",
            sym.standard_cif,
            f"{stem}_conventional_standard.cif",
            "chemical/x-cif",
            on_click="ignore",
            help=f"Conventional standard cell from spglib at {sym.report.symprec:g} Å.",
        )
    if data is not None:
        columns[3].download_button(
            "Routing data (JSON)", to_json(data), f"{stem}_routing.json", "application/json", on_click="ignore"
        )
        columns[4].download_button(
            "Routing atoms × capsules (CSV)", routing_csv(data), f"{stem}_routing.csv", "text/csv", on_click="ignore"
        )


# ---------------------------------------------------------------------------- several files


@panel("several files")
def several_files(uploads: list[CrystalFile], predictor: Predictor | None) -> None:
    """A table of predictions for all uploaded files, with a progress bar and a CSV download."""
    st.header(f"Predictions for {len(uploads)} uploaded files", anchor=False)
    if predictor is None:
        st.error("No model is loaded, so there are no predictions.")
        return
    if len(uploads) > MAX_TABLE_FILES:
        st.warning(f"Only the first {MAX_TABLE_FILES} files are predicted; use `sen predict` for more.")
        uploads = uploads[:MAX_TABLE_FILES]
    bar = st.progress(0.0, text="Predicting ...")

    def progress(done: int, total: int, name: str) -> None:
        bar.progress(done / total, text=f"{done} of {total} files: {name}")

    records, failures = predict_files(uploads, predictor, progress)
    bar.progress(1.0, text=f"{len(records)} of {len(uploads)} files predicted")
    if records:
        st.dataframe([_table_row(r) for r in records], hide_index=True)
        st.download_button(
            "All predictions (CSV)", records_csv(records), "sen_predictions.csv", "text/csv", on_click="ignore"
        )
    for name, reason in failures:
        st.error(literal(f"{name}: {reason}"))
    st.divider()


def _table_row(record: dict) -> dict:
    row = {
        "file": record["file"],
        "formula": record["formula"],
        "atoms": record["n_atoms"],
        "space group": f"{record['space_group_symbol']} ({record['space_group_number']})",
    }
    for key, value in record.items():
        if key.startswith("band_gap") and "test_mae" not in key:
            row["band gap (eV)"] = value
        elif key.startswith("formation_energy_per_atom") and "test_mae" not in key:
            row["formation energy (eV/atom)"] = value
    if "is_metal" in record:
        row["metal / insulator"] = "metal" if record["is_metal"] else "insulator"
    return row


def footer(crystal: CrystalFile, structure: Structure, predictor: Predictor | None, seconds: float) -> None:
    """Which crystal and model the page shows, and how long the page took."""
    model = predictor.name if predictor is not None else "no model"
    st.caption(
        literal(
            f"Page complete: {crystal.title} ({structure.composition.reduced_formula}) · model {model} · "
            f"computed in {1000 * seconds:.0f} ms"
        )
    )
