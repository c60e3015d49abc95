"""Downloads: the prediction (JSON, CSV), the standardised cell (CIF) and the routing data."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from pymatgen.core import Structure

from app.common import panel
from app.results import CrystalFile, SymmetryView, prediction_record, records_csv, routing_csv, to_json
from sen.predict import Predictor


@panel("downloads")
def downloads(
    crystal: CrystalFile,
    structure: Structure,
    explanation: dict | None,
    predictor: Predictor | None,
    sym: SymmetryView | None,
    data: dict | None,
) -> None:
    """Prediction (JSON, CSV), the standardised CIF and the heatmap data, as far as they exist."""
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
    if sym is not None and sym.standard_cell is not None:
        columns[2].download_button(
            "Standardised cell (CIF)",
            lambda: sym.standard_cif,  # written on the click (deferred download), not on every page
            f"{stem}_conventional_standard.cif",
            "chemical/x-cif",
            on_click="ignore",
            help=f"Conventional standard cell (spglib's standard setting) at {sym.report.symprec:g} Å.",
        )
    if data is not None:
        columns[3].download_button(
            "Routing data (JSON)", to_json(data), f"{stem}_routing.json", "application/json", on_click="ignore"
        )
        columns[4].download_button(
            "Routing atoms × capsules (CSV)", routing_csv(data), f"{stem}_routing.csv", "text/csv", on_click="ignore"
        )
