"""Plotly figures of SEN's capsule routing (atoms x capsules, orbits x capsules, capsule x capsule)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from app.viewer import capsule_colour

ROUTING_SCALE = "Blues"
_MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


def _capsule_names(k: int) -> list[str]:
    return [str(c) for c in range(k)]  # short tick labels; the axis title says "capsule"


def _layout(fig: go.Figure, title: str, height: int, crystal: str) -> go.Figure:
    # meta.crystal lets the browser tests check a chart belongs to the crystal on screen
    fig.update_layout(title=title, height=height, margin=_MARGIN, meta={"crystal": crystal})
    fig.update_xaxes(title="capsule", type="category", tickangle=0)
    return fig


def atom_routing_heatmap(data: dict, crystal: str = "") -> go.Figure:
    """Atoms (rows, grouped by Wyckoff orbit and labelled like ``O 3c · atom 2``) x capsules."""
    atoms = sorted(data["atoms"], key=lambda a: (_orbit_position(data, a["orbit"]), a["index"]))
    z = np.array([a["routing"] for a in atoms])
    rows = [f"{a['orbit']} · atom {a['index']}" for a in atoms]
    fig = _routing_figure(z, rows, data["n_capsules"])
    # Lines between orbits make the groups visible even when their rows look alike.
    for boundary in np.flatnonzero([a["orbit"] != b["orbit"] for a, b in zip(atoms, atoms[1:], strict=False)]):
        fig.add_hline(y=boundary + 0.5, line={"color": "#d62728", "width": 1.5})
    fig.update_yaxes(autorange="reversed", type="category")
    return _layout(fig, "Routing: atoms → capsules", min(900, 140 + 22 * len(atoms)), crystal)


def _routing_figure(z: np.ndarray, rows: list[str], n_capsules: int, **heatmap) -> go.Figure:
    """Routing shares (rows) over the capsules (columns), on the 0-1 scale shared by both routing charts."""
    return go.Figure(
        go.Heatmap(
            z=z,
            x=_capsule_names(n_capsules),
            y=rows,
            zmin=0,
            zmax=1,
            colorscale=ROUTING_SCALE,
            colorbar={"title": "share"},
            hovertemplate="%{y}<br>capsule %{x}: %{z:.3f}<extra></extra>",
            **heatmap,
        )
    )


def _orbit_position(data: dict, name: str) -> int:
    return next(i for i, orbit in enumerate(data["orbits"]) if orbit["orbit"] == name)


def orbit_routing_heatmap(data: dict, crystal: str = "") -> go.Figure:
    """Mean routing of each Wyckoff orbit (rows) over the capsules."""
    z = np.array([o["routing"] for o in data["orbits"]])
    rows = [f"{o['orbit']} ({len(o['atoms'])} atoms)" for o in data["orbits"]]
    fig = _routing_figure(z, rows, data["n_capsules"], texttemplate="%{z:.2f}")
    fig.update_yaxes(autorange="reversed", type="category")
    return _layout(fig, "Routing per orbit (mean over its atoms)", min(600, 150 + 34 * len(rows)), crystal)


def capsule_attention_heatmap(data: dict, crystal: str = "") -> go.Figure:
    """Capsule x capsule self-attention (row: the capsule that attends)."""
    names = _capsule_names(data["n_capsules"])
    fig = go.Figure(
        go.Heatmap(
            z=np.array(data["capsule_attention"]),
            x=names,
            y=names,
            colorscale="Purples",
            colorbar={"title": "weight"},
            hovertemplate="capsule %{y} attends to capsule %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig = _layout(fig, "Capsule × capsule attention", 380, crystal)
    fig.update_yaxes(autorange="reversed", type="category", title="attending capsule")
    return fig


def capsule_activation_bars(data: dict, crystal: str = "") -> go.Figure:
    """Activation of each pattern capsule, in the capsule colours of the 3D view."""
    k = data["n_capsules"]
    fig = go.Figure(
        go.Bar(
            x=_capsule_names(k),
            y=data["capsule_activation"],
            marker_color=[capsule_colour(c) for c in range(k)],
            hovertemplate="capsule %{x}: %{y:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(title="activation", rangemode="tozero")
    return _layout(fig, "Capsule activations", 320, crystal)


def output_routing_heatmap(data: dict, titles: Sequence[str], crystal: str = "") -> go.Figure:
    """How much each predicted property reads from each capsule."""
    z = np.array([data["output_routing"][t] for t in data["output_routing"]])
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=_capsule_names(data["n_capsules"]),
            y=list(titles),
            colorscale="Greens",
            colorbar={"title": "weight"},
            hovertemplate="%{y} reads capsule %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    return _layout(fig, "Which capsules each prediction reads", 160 + 50 * len(z), crystal)
