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


def _layout(title: str, height: int, crystal: str, **axes) -> dict:
    """The layout of a routing chart, given whole (one validation pass: plotly's update_* calls and
    add_hline cost more than the data on every page)."""
    # meta.crystal lets the browser tests check a chart belongs to the crystal on screen
    layout = {"title": {"text": title}, "height": height, "margin": _MARGIN, "meta": {"crystal": crystal},
              "xaxis": {"title": {"text": "capsule"}, "type": "category", "tickangle": 0}}  # fmt: skip
    for name, settings in axes.items():
        layout[name] = {**layout.get(name, {}), **settings}
    return layout


_ROWS_DOWN = {"autorange": "reversed", "type": "category"}


def atom_routing_heatmap(data: dict, crystal: str = "") -> go.Figure:
    """Atoms (rows, grouped by Wyckoff orbit and labelled like ``O 3c · atom 2``) x capsules."""
    atoms = sorted(data["atoms"], key=lambda a: (_orbit_position(data, a["orbit"]), a["index"]))
    z = np.array([a["routing"] for a in atoms])
    rows = [f"{a['orbit']} · atom {a['index']}" for a in atoms]
    # Lines between orbits make the groups visible even when their rows look alike.
    lines = [
        {"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": b + 0.5, "y1": b + 0.5,
         "line": {"color": "#d62728", "width": 1.5}}
        for b in np.flatnonzero([a["orbit"] != b["orbit"] for a, b in zip(atoms, atoms[1:], strict=False)])
    ]  # fmt: skip
    layout = _layout("Routing: atoms → capsules", min(900, 140 + 22 * len(atoms)), crystal, yaxis=_ROWS_DOWN)
    return go.Figure(_routing_heatmap(z, rows, data["n_capsules"]), {**layout, "shapes": lines})


def _routing_heatmap(z: np.ndarray, rows: list[str], n_capsules: int, **heatmap) -> dict:
    """Routing shares (rows) over the capsules (columns), on the 0-1 scale shared by both routing charts."""
    return {"type": "heatmap", "z": z, "x": _capsule_names(n_capsules), "y": rows, "zmin": 0, "zmax": 1,
            "colorscale": ROUTING_SCALE, "colorbar": {"title": {"text": "share"}},
            "hovertemplate": "%{y}<br>capsule %{x}: %{z:.3f}<extra></extra>", **heatmap}  # fmt: skip


def _orbit_position(data: dict, name: str) -> int:
    return next(i for i, orbit in enumerate(data["orbits"]) if orbit["orbit"] == name)


def orbit_routing_heatmap(data: dict, crystal: str = "") -> go.Figure:
    """Mean routing of each Wyckoff orbit (rows) over the capsules."""
    z = np.array([o["routing"] for o in data["orbits"]])
    rows = [f"{o['orbit']} ({len(o['atoms'])} atoms)" for o in data["orbits"]]
    trace = _routing_heatmap(z, rows, data["n_capsules"], texttemplate="%{z:.2f}")
    height = min(600, 150 + 34 * len(rows))
    return go.Figure(trace, _layout("Routing per orbit (mean over its atoms)", height, crystal, yaxis=_ROWS_DOWN))


def capsule_attention_heatmap(data: dict, crystal: str = "") -> go.Figure:
    """Capsule x capsule self-attention (row: the capsule that attends)."""
    names = _capsule_names(data["n_capsules"])
    trace = {"type": "heatmap", "z": np.array(data["capsule_attention"]), "x": names, "y": names,
             "colorscale": "Purples", "colorbar": {"title": {"text": "weight"}},
             "hovertemplate": "capsule %{y} attends to capsule %{x}: %{z:.3f}<extra></extra>"}  # fmt: skip
    yaxis = {**_ROWS_DOWN, "title": {"text": "attending capsule"}}
    return go.Figure(trace, _layout("Capsule × capsule attention", 380, crystal, yaxis=yaxis))


def capsule_activation_bars(data: dict, crystal: str = "") -> go.Figure:
    """Activation of each pattern capsule, in the capsule colours of the 3D view."""
    k = data["n_capsules"]
    trace = {"type": "bar", "x": _capsule_names(k), "y": data["capsule_activation"],
             "marker": {"color": [capsule_colour(c) for c in range(k)]},
             "hovertemplate": "capsule %{x}: %{y:.3f}<extra></extra>"}  # fmt: skip
    yaxis = {"title": {"text": "activation"}, "rangemode": "tozero"}
    return go.Figure(trace, _layout("Capsule activations", 320, crystal, yaxis=yaxis))


def output_routing_heatmap(data: dict, titles: Sequence[str], crystal: str = "") -> go.Figure:
    """How much each predicted property reads from each capsule."""
    z = np.array([data["output_routing"][t] for t in data["output_routing"]])
    trace = {"type": "heatmap", "z": z, "x": _capsule_names(data["n_capsules"]), "y": list(titles),
             "colorscale": "Greens", "colorbar": {"title": {"text": "weight"}},
             "hovertemplate": "%{y} reads capsule %{x}: %{z:.3f}<extra></extra>"}  # fmt: skip
    height = 160 + 50 * len(z)
    return go.Figure(trace, _layout("Which capsules each prediction reads", height, crystal, yaxis=_ROWS_DOWN))
