"""Symmetry at the visitor's tolerance: space group, lattice of the given and standard cell, Wyckoff orbits."""

from __future__ import annotations

import streamlit as st
from pymatgen.core import Structure

from app.common import literal, panel
from app.results import CrystalFile, SymmetryView, lattice_table, orbit_table, symmetry_view
from app.sidebar import Settings


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
        f"Hall symbol {literal(report.hall_symbol)} · {report.n_operations} symmetry operations in this cell · "
        f"tolerance {report.symprec:g} Å, {report.angle_tolerance:g}°"
    )
    given = explanation["symmetry"] if explanation else None
    if given is not None and (given.space_group_number, given.n_orbits) != (report.space_group_number, report.n_orbits):
        st.info(
            f"At this tolerance spglib finds {literal(report.space_group_symbol)}; the network was given "
            f"{literal(given.space_group_symbol)} (No. {given.space_group_number}), found at its own tolerance of "
            f"{given.symprec:g} Å and {given.angle_tolerance:g}°, and its routing below uses those orbits."
        )
    _lattice(sym)
    st.markdown("**Wyckoff orbits** (symmetry clusters)")
    st.table(orbit_table(report), hide_index=True, border="horizontal")
    st.caption(
        "A Wyckoff orbit is a set of atoms that symmetry maps onto each other: they are chemically identical "
        "copies. The label `O 3c` reads: oxygen, 3 copies per conventional cell, Wyckoff position c; orbits "
        "with the same label are numbered, `O 4c (1)` and `O 4c (2)`, as in the charts. "
        "Site symmetry is the part of the point group that leaves one atom where it is. Raise the tolerance "
        "to let slightly distorted structures count as more symmetric."
    )
    return sym


def _lattice(sym: SymmetryView) -> None:
    st.table(lattice_table(sym.lattice_rows), hide_index=True, border="horizontal")
    if sym.standard_error is not None:
        st.error(literal(f"No conventional standard cell: {sym.standard_error}"))
    else:
        st.caption(
            "Conventional standard cell: spglib's standard setting, the one the Wyckoff letters refer to and the "
            "downloadable CIF is written in."
        )
