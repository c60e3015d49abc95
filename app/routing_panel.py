"""What the network did with the crystal: capsule-routing charts and how well they follow symmetry."""

from __future__ import annotations

import streamlit as st
from pymatgen.core import Structure

from app import charts
from app.common import panel
from app.results import TITLES, CrystalFile, routing_data
from sen.predict import Predictor

_PLOTLY = {"displaylogo": False}


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
    _agreement(data, explanation)
    _charts(data, crystal.digest, [TITLES.get(t, t) for t in predictor.targets])
    return data


def bits(value: float) -> str:
    """Bits with two decimals; information is never negative, so rounding noise never shows as -0.00."""
    return f"{max(0.0, float(value)):.2f}"


def information_text(mi: float, entropy: float, n_orbits: int) -> str:
    """The orbit-capsule information as shown: "0.92 of 1.37 bits", or why it says nothing."""
    if n_orbits < 2:
        return "not informative (one orbit)"
    return f"{bits(mi)} of {bits(entropy)} bits"


def _agreement(data: dict, explanation: dict) -> None:
    spread, mi, h = data["routing_spread"], data["orbit_capsule_mutual_information_bits"], data["orbit_entropy_bits"]
    n_orbits = len(data["orbits"])
    columns = st.columns(3)
    columns[0].metric(
        "Routing spread inside orbits",
        f"{spread:.1e}",
        help="Largest difference between the routing of an atom and the mean routing of its Wyckoff orbit.",
    )
    columns[1].metric(
        "Orbit ↔ dominant capsule information",
        information_text(mi, h, n_orbits),
        help="Mutual information between each atom's orbit and its dominant capsule; the second number is the "
        "most it can be (the entropy of the orbit labels). With a single orbit both are 0 and say nothing.",
    )
    columns[2].metric("Capsules used as dominant", f"{len(set(explanation['dominant_capsule'].tolist()))}")
    st.caption(
        "Symmetry-equivalent atoms have identical surroundings, so a network that respects symmetry routes "
        "them identically: the spread should be about 0. The information number says how well the dominant "
        "capsule tells you which orbit an atom belongs to (equal to the maximum: capsules separate the orbits; "
        "0: they ignore them)."
    )


def _charts(data: dict, key: str, titles: list[str]) -> None:
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(charts.atom_routing_heatmap(data, key), config=_PLOTLY)
        st.caption(
            "Each row is one atom, grouped by Wyckoff orbit (red lines separate the orbits); each column is a "
            "capsule. A row shows how the atom's vote is shared between the capsules (rows add up to 1). "
            "Rows of one orbit should look the same."
        )
    with right:
        st.plotly_chart(charts.orbit_routing_heatmap(data, key), config=_PLOTLY)
        st.caption("The same, averaged over each orbit: which patterns each kind of site is assigned to.")
    columns = st.columns(3)
    with columns[0]:
        st.plotly_chart(charts.capsule_attention_heatmap(data, key), config=_PLOTLY)
        st.caption(
            "After routing, the capsules look at each other (self-attention): row i shows how much capsule i "
            "takes from every other capsule: the interactions between clusters."
        )
    with columns[1]:
        st.plotly_chart(charts.capsule_activation_bars(data, key), config=_PLOTLY)
        st.caption("How strongly each capsule is switched on for this crystal (colours as in the 3D view).")
    with columns[2]:
        st.plotly_chart(charts.output_routing_heatmap(data, titles, key), config=_PLOTLY)
        st.caption("Each prediction is read from the capsules with these weights.")
