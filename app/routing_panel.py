"""What the network did with the crystal: capsule-routing charts and how well they follow symmetry."""

from __future__ import annotations

import streamlit as st
from pymatgen.core import Structure

from app import charts
from app.common import panel
from app.results import TITLES, CrystalFile, model_key, routing_data
from sen.predict import Predictor

_PLOTLY = {"displaylogo": False}


@panel("capsule routing")
def routing(crystal: CrystalFile, structure: Structure, explanation: dict | None, predictor: Predictor | None):
    """Capsule-routing heatmaps with plain-language explanations, and the agreement numbers."""
    st.header("What the network did: capsule routing", anchor=False)
    if explanation is None or predictor is None:
        st.info("The routing needs a prediction, which is not available.")
        return None
    explanation = _chosen_network(explanation, predictor)
    data = routing_data(structure, explanation, predictor.targets)
    st.markdown(
        "SEN sends every atom to a small set of learned *pattern capsules* (like a student sorting atoms into "
        "groups of similar environments), lets the capsules exchange information, and reads the predictions "
        "from them. The charts show those intermediate matrices for this crystal."
    )
    if predictor.n_members > 1:
        st.caption(
            f"This model is an ensemble of {predictor.n_members} networks and each prediction is the mean of the "
            f"networks chosen for that property. The routing shown is that of network {explanation['network']}: "
            "capsule k of one network is not capsule k of another, so routings are never averaged. Per-atom "
            "contributions split the ensemble's prediction."
        )
        _network_consistency(explanation)
    _agreement(data, explanation)
    figures = _figures(crystal.digest, explanation["network"], model_key(predictor), tuple(predictor.targets), data)
    _charts(figures)
    return data


@st.cache_resource(max_entries=256, show_spinner=False)
def _figures(digest: str, network: int, model: str, targets: tuple[str, ...], _data: dict) -> list:
    """The five routing charts of one crystal and network, built once per server and shared by every
    session that shows them (Streamlit only reads a figure to send it)."""
    titles = [TITLES.get(t, t) for t in targets]
    return [charts.atom_routing_heatmap(_data, digest), charts.orbit_routing_heatmap(_data, digest),
            charts.capsule_attention_heatmap(_data, digest), charts.capsule_activation_bars(_data, digest),
            charts.output_routing_heatmap(_data, titles, digest)]  # fmt: skip


#: Session-state key of the routing panel's network picker (the 3D view and atom details follow it).
NETWORK_KEY = "routing_network"


def picked_network(explanation: dict | None) -> dict | None:
    """The explanation with the routing of the network picked in the routing panel (the first until one
    is picked, or when the pick is out of range): what the 3D view, atom details and charts show."""
    if explanation is None:
        return None
    networks = explanation.get("networks") or []
    choice = st.session_state.get(NETWORK_KEY, 1)
    if len(networks) < 2 or not isinstance(choice, int) or not 1 <= choice <= len(networks):
        return {**explanation, "network": 1}
    return {**explanation, **networks[choice - 1], "network": choice}


def _chosen_network(explanation: dict, predictor: Predictor) -> dict:
    """The explanation with the routing of the network the user picks (the first by default)."""
    networks = explanation.get("networks") or []
    if predictor.n_members < 2 or len(networks) < 2:
        return {**explanation, "network": 1}
    if st.session_state.get(NETWORK_KEY) not in range(1, len(networks) + 1):
        st.session_state.pop(NETWORK_KEY, None)  # e.g. a model with fewer networks
    st.selectbox(
        "Network whose capsules to show",
        options=list(range(1, len(networks) + 1)),
        format_func=lambda k: f"network {k} of {len(networks)}",
        help="Every network of the ensemble learned its own capsules; pick one to look at its routing "
        "(the 3D view's capsule colours and atom details follow).",
        key=NETWORK_KEY,
    )
    return picked_network(explanation)


def network_consistency_rows(explanation: dict) -> list[dict]:
    """One row per network: how it routes this crystal's Wyckoff orbits (for comparing the networks)."""
    n_orbits = int(explanation["symmetry"].n_orbits)
    return [
        {
            "network": k,
            "orbit ↔ capsule information": information_text(
                n["orbit_capsule_mutual_information"], n["orbit_entropy"], n_orbits
            ),
            "routing spread inside orbits": f"{float(n['routing_spread']):.1e}",
            "capsules used as dominant": len(set(n["dominant_capsule"].tolist())),
        }
        for k, n in enumerate(explanation.get("networks") or [], 1)
    ]


def _network_consistency(explanation: dict) -> None:
    with st.expander("How consistently do the networks route the orbits?"):
        st.dataframe(network_consistency_rows(explanation), hide_index=True)
        st.caption(
            "Each network's own capsules: the information between orbit and dominant capsule (the most it can be "
            "is the entropy of the orbits), and the routing spread inside orbits (about 0 when equivalent atoms "
            "are routed alike). Networks that all reach the maximum separate the orbits in their own ways."
        )


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


def _charts(figures: list) -> None:
    atoms, orbits, attention, activation, outputs = figures
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(atoms, config=_PLOTLY)
        st.caption(
            "Each row is one atom, grouped by Wyckoff orbit (red lines separate the orbits); each column is a "
            "capsule. A row shows how the atom's vote is shared between the capsules (rows add up to 1). "
            "Rows of one orbit should look the same."
        )
    with right:
        st.plotly_chart(orbits, config=_PLOTLY)
        st.caption("The same, averaged over each orbit: which patterns each kind of site is assigned to.")
    columns = st.columns(3)
    with columns[0]:
        st.plotly_chart(attention, config=_PLOTLY)
        st.caption(
            "After routing, the capsules look at each other (self-attention): row i shows how much capsule i "
            "takes from every other capsule: the interactions between clusters."
        )
    with columns[1]:
        st.plotly_chart(activation, config=_PLOTLY)
        st.caption("How strongly each capsule is switched on for this crystal (colours as in the 3D view).")
    with columns[2]:
        st.plotly_chart(outputs, config=_PLOTLY)
        st.caption("Each prediction is read from the capsules with these weights.")
