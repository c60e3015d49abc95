"""What the page says about each atom: the details the 3D view shows on hover or click, and the atom
table under the view whose selected row highlights that atom (and its copies) in the view.

Everything here is plain text built from the structure, its :class:`~sen.symmetry.SymmetryReport` and
the prediction's explanation; app/viewer.py puts it into the view's scene and the view sets it as
``textContent``. The orbit names are the page's own (:func:`sen.symmetry.unique_orbit_names`), and the
routing is the explanation's top-level one: the network picked in the routing panel
(:func:`app.routing_panel.picked_network`; the first until one is picked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pymatgen.core import Structure

from app.viewer import SiteDetails, wrapped_frac_coords
from sen.symmetry import SymmetryReport, unique_orbit_names

TABLE_KEY = "atom_table"  # session-state key of the atom table's selection


def _triple(values, digits: int) -> str:
    return "(" + ", ".join(f"{float(v) + 0.0:.{digits}f}" for v in values) + ")"


def _routing(explanation: Mapping | None, n_atoms: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(atoms x capsules) routing and per-atom dominant capsule, or (None, None) without a prediction."""
    if explanation is None or "routing" not in explanation:
        return None, None
    routing = np.asarray(explanation["routing"], dtype=float)
    if routing.ndim != 2 or routing.shape[0] != n_atoms:
        return None, None
    dominant = explanation.get("dominant_capsule")
    dominant = np.asarray(dominant, dtype=int) if dominant is not None else routing.argmax(1)
    return routing, dominant


def _network_note(explanation: Mapping | None) -> str:
    networks = (explanation or {}).get("networks") or []
    return f" (network {(explanation or {}).get('network', 1)} of {len(networks)})" if len(networks) > 1 else ""


def site_details(
    structure: Structure, report: SymmetryReport | None, explanation: Mapping | None = None
) -> list[SiteDetails]:
    """One :class:`~app.viewer.SiteDetails` per site: element, Wyckoff label and site symmetry, fractional
    and Cartesian coordinates, and the site's routing over the capsules with its dominant capsule."""
    frac = wrapped_frac_coords(structure)
    cart = np.asarray(structure.lattice.get_cartesian_coords(frac))
    names = unique_orbit_names(report) if report is not None else None
    routing, dominant = _routing(explanation, len(structure))
    note = _network_note(explanation)
    out = []
    for i, site in enumerate(structure):
        element = site.specie.symbol
        if report is not None and names is not None:
            k = int(report.orbit_index[i])
            orbit = report.orbits[k]
            label = names[k]
            symmetry = (
                f"{element} · Wyckoff {orbit.multiplicity}{report.wyckoff_letters[i]} · "
                f"site symmetry {report.site_symmetry_symbols[i]}"
            )
        else:
            label, symmetry = element, f"{element} · symmetry not known"
        lines = [
            f"{label} · site {i} of {len(structure)}",
            symmetry,
            f"fractional {_triple(frac[i], 4)}",
            f"Cartesian {_triple(cart[i], 3)} Å",
        ]
        weights: tuple[float, ...] = ()
        if routing is not None:
            row, c = routing[i], int(dominant[i])
            weights = tuple(float(w) for w in row)
            lines.append(f"dominant capsule {c} ({row[c]:.2f}){note}; routing " + " ".join(f"{w:.2f}" for w in row))
        else:
            lines.append("routing: needs a prediction")
        out.append(SiteDetails(label, tuple(lines), weights))
    return out


def atom_rows(structure: Structure, report: SymmetryReport | None, explanation: Mapping | None = None) -> list[dict]:
    """One row per site for the atom table: index, element, orbit, site symmetry, fractional
    coordinates and dominant capsule."""
    frac = wrapped_frac_coords(structure)
    names = unique_orbit_names(report) if report is not None else None
    _, dominant = _routing(explanation, len(structure))
    rows = []
    for i, site in enumerate(structure):
        k = int(report.orbit_index[i]) if report is not None else None
        rows.append(
            {
                "site": i,
                "element": site.specie.symbol,
                "orbit": names[k] if names is not None else "",
                "site symmetry": report.site_symmetry_symbols[i] if report is not None else "",
                "fractional x, y, z": ", ".join(f"{float(v) + 0.0:.3f}" for v in frac[i]),
                "dominant capsule": int(dominant[i]) if dominant is not None else None,
            }
        )
    return rows


def selected_site(state, n_sites: int) -> int | None:
    """The row chosen in the atom table (its session state ``state``), or None (nothing chosen, or a row
    the current crystal does not have)."""
    try:
        rows: Sequence = state["selection"]["rows"]
    except (KeyError, TypeError, IndexError):
        try:
            rows = state.selection.rows
        except AttributeError:
            return None
    if not rows:
        return None
    try:
        row = int(rows[0])
    except (TypeError, ValueError):
        return None
    return row if 0 <= row < n_sites else None


def atom_table(rows: list[dict], key: str = TABLE_KEY) -> None:
    """The compact atom table; selecting a row highlights that atom in the 3D view on the rerun."""
    import pandas as pd
    import streamlit as st

    frame = pd.DataFrame(rows)
    if frame["dominant capsule"].isna().all():
        frame = frame.drop(columns=["dominant capsule"])
    st.dataframe(
        frame,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=key,
        column_config={
            "site": st.column_config.NumberColumn("#", help="The atom's index in the cell"),
            "element": st.column_config.TextColumn("el."),
            "site symmetry": st.column_config.TextColumn("site sym.", help="Site-symmetry group of the atom"),
            "fractional x, y, z": st.column_config.TextColumn("x, y, z", help="Fractional coordinates in the cell"),
            "dominant capsule": st.column_config.NumberColumn(
                "capsule", help="The capsule that receives most of the atom's routing (the network picked for the routing charts)"
            ),
        },
    )
