"""The interactive 3D view of the crystal, coloured as the sidebar says, with its legend."""

from __future__ import annotations

import math

import streamlit as st
from pymatgen.core import Structure

from app import atom_details, viewer
from app.common import literal, panel
from app.results import CrystalFile, SymmetryView, unique_orbit_names
from app.sidebar import Settings

CANVAS_HEIGHT = 420


@panel("3D view")
def structure_view(
    crystal: CrystalFile,
    structure: Structure,
    settings: Settings,
    sym: SymmetryView | None,
    explanation: dict | None,
    show_elements: bool = False,
    camera: str = "",
) -> None:
    """Interactive 3D view (3Dmol.js) with the chosen colouring and its legend, and the space group's
    symmetry elements drawn in when ``show_elements``. Hovering or clicking an atom shows its details;
    under the view, the atom table: its selected row highlights that atom in the view. Views with the
    same ``camera`` (default: the crystal's digest), supercell and atom count keep the user's rotation."""
    st.markdown("**Structure** (drag to rotate, scroll to zoom)")
    if not viewer.local_script_available():
        st.warning(
            "3Dmol.js is not installed in app/static/ (run `npm ci`), so the 3D view loads it from the "
            "jsDelivr CDN and needs internet access."
        )
    report = sym.report if sym is not None else (explanation["symmetry"] if explanation else None)
    colourings = _colourings(structure, settings.colour_mode, report, explanation)
    supercell = settings.supercell
    if len(structure) * math.prod(supercell) > viewer.MAX_VIEW_ATOMS // 2:
        st.warning(f"{len(structure)} atoms: the supercell is too large to draw quickly; showing one cell.")
        supercell = (1, 1, 1)
    labels = None
    if settings.label_atoms and report is not None:
        names = unique_orbit_names(report)
        labels = [names[int(k)] for k in report.orbit_index]
    highlight = atom_details.selected_site(st.session_state.get(atom_details.TABLE_KEY), len(structure))
    scene = viewer.build_viewer_scene(
        structure,
        colourings,
        supercell=supercell,
        atom_labels=labels,
        height=CANVAS_HEIGHT,
        name=crystal.title,
        details=atom_details.site_details(structure, report, explanation),
        highlight=highlight,
        camera=f"{camera or crystal.digest}|{supercell}|{len(structure)}",
    )
    elements_caption = ""
    if show_elements:
        from app.teaching_panel import with_symmetry_elements

        scene, elements_caption = with_symmetry_elements(
            scene, crystal, structure, settings.symprec, settings.angle_tolerance, supercell
        )
    viewer.render_viewer(scene, viewer.viewer_height(CANVAS_HEIGHT, len(colourings)))
    if elements_caption:
        st.caption(literal(elements_caption))
    caption = (
        "Hover over an atom for its details (click to keep them; the atom table below does the same). "
        "Grey lines: the unit cell (axes a, b, c). Atoms on a cell face are drawn on both faces. "
        "Wyckoff orbit: atoms that the symmetry operations map onto each other share a colour. "
        "Dominant capsule: the learned pattern that receives most of the atom's routing."
    )
    if labels is not None:
        drawn = len(viewer.cell_atoms(structure, supercell)[0])
        caption += (
            " Every drawn atom is labelled with its orbit."
            if viewer.labels_every_atom(drawn)
            else f" {drawn} atoms are drawn: one atom of each orbit is labelled in each cell, to keep labels readable."
        )
    st.caption(caption)
    _atom_table(structure, report, explanation)


def _atom_table(structure: Structure, report, explanation: dict | None) -> None:
    st.markdown("**Atoms** (select a row to highlight the atom and its copies in the view)")
    atom_details.atom_table(atom_details.atom_rows(structure, report, explanation))
    networks = (explanation or {}).get("networks") or []
    if len(networks) > 1:
        st.caption(
            f"Routing and dominant capsule of network {explanation.get('network', 1)} of {len(networks)}, the one "
            "picked for the routing charts below."
        )


def _colourings(structure: Structure, mode: str, report, explanation: dict | None) -> list[viewer.AtomColouring]:
    colourings = []
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
    return colourings
