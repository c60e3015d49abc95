"""Several files uploaded at once: a table of predictions, with a progress bar and a CSV download."""

from __future__ import annotations

import streamlit as st

from app.common import literal, panel
from app.results import TITLES, UNITS, CrystalFile, predict_files, record_key, records_csv
from sen.predict import Predictor


@panel("several files")
def several_files(uploads: list[CrystalFile], predictor: Predictor | None) -> None:
    """A table of predictions for the files of one upload (bounded in files and atoms)."""
    st.header(f"Predictions for {len(uploads)} uploaded files", anchor=False)
    if predictor is None:
        st.error("No model is loaded, so there are no predictions.")
        return
    bar = st.progress(0.0, text="Predicting ...")

    def progress(done: int, total: int, name: str) -> None:
        # Streamlit stops the run here if the visitor has left (or changed something meanwhile).
        bar.progress(done / total, text=literal(f"{done} of {total} files: {name}"))

    result = predict_files(uploads, predictor, progress)
    predicted = len(uploads) - len(result.left_out)
    bar.progress(1.0, text=f"{len(result.records)} of {predicted} files predicted")
    if result.left_out:
        st.warning(
            literal(
                f"{len(result.left_out)} of {len(uploads)} files were not predicted: {result.limit}. "
                f"Left out: {_names(result.left_out)}. Upload them separately, or use `sen predict` for many files."
            )
        )
    if result.records:
        rows = [table_row(r, predictor.targets) for r in result.records]
        st.dataframe(rows, hide_index=True, column_config=column_config(predictor))
        st.download_button(
            "All predictions (CSV)", records_csv(result.records), "sen_predictions.csv", "text/csv", on_click="ignore"
        )
    for name, reason in result.failures:
        st.error(literal(f"{name}: {reason}"))
    st.divider()


def _names(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def value_column(target: str) -> str:
    """Table column of a predicted property, e.g. ``band gap (eV)``."""
    return f"{TITLES.get(target, target).lower()} ({UNITS.get(target, '')})"


def spread_column(target: str) -> str:
    """Table column of the networks' spread for a property, e.g. ``band gap ± (eV)``."""
    return f"{TITLES.get(target, target).lower()} ± ({UNITS.get(target, '')})"


def table_row(record: dict, targets: tuple[str, ...]) -> dict:
    """One row of the table: the prediction and the networks' spread in separate columns."""
    row = {
        "file": record["file"],
        "formula": record["formula"],
        "atoms": record["n_atoms"],
        "space group": f"{record['space_group_symbol']} ({record['space_group_number']})",
    }
    for target in targets:
        row[value_column(target)] = record.get(record_key(target))
        if record_key(target, "_std") in record:
            row[spread_column(target)] = record[record_key(target, "_std")]
    if "is_metal" in record:
        row["metal / insulator"] = "metal" if record["is_metal"] else "insulator"
    return row


def column_config(predictor: Predictor) -> dict:
    """Number formats and explanations of the prediction columns."""
    config = {}
    for target in predictor.targets:
        digits = 2 if target == "band_gap" else 3
        config[value_column(target)] = st.column_config.NumberColumn(
            format=f"%.{digits}f", help=f"Predicted {TITLES.get(target, target).lower()}"
        )
        config[spread_column(target)] = st.column_config.NumberColumn(
            format=f"%.{digits + 1}f",
            help=f"Spread (standard deviation) of the {predictor.members_for(target)} networks' predictions",
        )
    return config
