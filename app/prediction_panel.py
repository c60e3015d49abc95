"""The top of the detailed view: which crystal, and what the network predicts for it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from pymatgen.core import Structure

from app.common import USER_ERRORS, literal, panel, show_failure
from app.results import (
    TITLES,
    UNITS,
    CrystalFile,
    coverage_warnings,
    explain_crystal,
    model_test_mae,
    read_crystal,
    spread_warning,
)
from app.sidebar import Settings
from sen.predict import Predictor

_TARGET_HELP = {
    "band_gap": "Energy gap between valence and conduction band (PBE/GGA level, as in the Materials Project data).",
    "formation_energy_per_atom": "Energy to form the crystal from its elements, per atom; negative means stable "
    "with respect to the elements.",
}


def load_structure(settings: Settings) -> tuple[CrystalFile, Structure] | None:
    """Read the crystal to show; an upload that cannot be read gives its reason and the example
    is shown instead."""
    crystal = settings.crystal
    if crystal is None:
        st.info("Upload a crystal file in the sidebar to start.")
        return None
    loaded = _read(crystal)
    if loaded is not None or crystal.origin == "example" or settings.example is None:
        return loaded
    st.info(literal(f"Showing the example crystal {settings.example.title} instead."))
    return _read(settings.example)


def _read(crystal: CrystalFile) -> tuple[CrystalFile, Structure] | None:
    try:
        return crystal, read_crystal(crystal)
    except Exception as exc:  # sen's reason, or any other failure in reading: one line
        show_failure(exc, "reading the file", prefix=f"{crystal.name}: ")
    return None


@panel("crystal name")
def header(crystal: CrystalFile, structure: Structure) -> None:
    """Name of the crystal, its formula and where it comes from."""
    st.subheader(literal(crystal.title), anchor=False)
    origin = f"example crystal, source: {crystal.source}" if crystal.origin == "example" else "uploaded file"
    st.caption(literal(f"{structure.composition.reduced_formula} · {len(structure)} atoms in the cell · {origin}"))


@panel("prediction")
def prediction(crystal: CrystalFile, structure: Structure, predictor: Predictor | None, model_error: str | None):
    """Prediction cards (band gap, formation energy, metal / insulator) with the test MAE;
    returns ``Predictor.explain``'s result, or None when there is no prediction."""
    if predictor is None:
        st.error(literal(f"No prediction: {model_error}"))
        return None
    try:
        explanation = explain_crystal(crystal, predictor)
    except USER_ERRORS as exc:
        st.error(literal(f"No prediction for {crystal.name}: {exc}"))
        return None
    columns = st.columns(3)
    for column, target in zip(columns, ("band_gap", "formation_energy_per_atom"), strict=False):
        if target in explanation:
            with column:
                _target_card(target, explanation, predictor)
    if "metal_probability" in explanation:
        columns[2].metric(
            "Metal or insulator",
            "Metal" if explanation["is_metal"] else "Insulator",
            help=f"Metal: the predicted band gap is exactly 0 {UNITS['band_gap']} (the network's probability of a "
            "gap is below 0.5).",
        )
        columns[2].caption(f"probability of a zero gap: {float(explanation['metal_probability']):.0%}")
    for target in predictor.targets:
        note = spread_warning(predictor.card, target, explanation, predictor.members_for(target))
        if note:
            st.warning(note)
    for note in coverage_warnings(structure, predictor.card):
        st.warning(note)
    model_card(predictor)
    return explanation


def _target_card(target: str, explanation: dict, predictor: Predictor) -> None:
    unit = UNITS[target]
    digits = 2 if target == "band_gap" else 3
    st.metric(TITLES[target], f"{explanation[target]:.{digits}f} {unit}", help=_TARGET_HELP[target])
    mae = model_test_mae(predictor.card, target)
    caption = (
        f"± {mae:.{digits}f} {unit} (mean absolute error on the test set)"
        if mae is not None
        else "uncertainty: the test error of these weights has not been measured yet"
    )
    n_networks = predictor.members_for(target)
    if f"{target}_std" in explanation and n_networks > 1:
        caption += f"; the {n_networks} networks spread ± {explanation[f'{target}_std']:.{digits + 1}f} {unit}"
    st.caption(caption)


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


def footer(crystal: CrystalFile, structure: Structure, predictor: Predictor | None, seconds: float) -> None:
    """Which crystal and model the page shows, and how long the page took."""
    model = predictor.name if predictor is not None else "no model"
    st.caption(
        literal(
            f"Page complete: {crystal.title} ({structure.composition.reduced_formula}) · model {model} · "
            f"computed in {1000 * seconds:.0f} ms"
        )
    )
