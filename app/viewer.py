"""The interactive 3D crystal view: a scene built here, drawn by 3Dmol.js (served locally) in a view
that stays on the page.

:func:`build_viewer_scene` turns a structure into plain JSON data: an XYZ block written here from
pymatgen's Cartesian coordinates (Å) and element symbols, colours from fixed palettes (checked to be
``#rrggbb``), labels built from element symbols and Wyckoff letters, the cell, and the atom details.
The view (app/viewer_component/: one HTML page and its script, a Streamlit component) draws it; it
never sees the uploaded file's text, and it only ever sets strings as ``textContent`` or as 3Dmol
label text, so a CIF containing ``</script>`` cannot run anything. Streamlit hands each new scene to
the same view, which redraws it in place: no new document, no new WebGL context, and the user's
rotation and zoom are kept while the same crystal is changed (a distortion, a colouring, a table pick).

Hovering or clicking a drawn atom (3Dmol's ``setHoverable`` / ``setClickable``) shows the details of
its unit-cell site (:class:`SiteDetails`, built in Python by app/atom_details.py) in a box over the
view; supercell and boundary copies map to their site.

:func:`render_viewer` is the one place that decides how the scene reaches the page.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import plotly.express as px
from monty.serialization import loadfn
from pymatgen.core import Structure

STATIC_DIR = Path(__file__).resolve().parent / "static"
COMPONENT_DIR = Path(__file__).resolve().parent / "viewer_component"  # the view's page and script
LOCAL_3DMOL_FILE = STATIC_DIR / "3Dmol-min.js"
LOCAL_3DMOL_URL = "/app/static/3Dmol-min.js"  # Streamlit static serving (.streamlit/config.toml)
THREEDMOL_VERSION = "2.5.5"  # the npm package in package.json (a test keeps them the same)
CDN_3DMOL_URL = f"https://cdn.jsdelivr.net/npm/3dmol@{THREEDMOL_VERSION}/build/3Dmol-min.js"

#: Colour modes of the 3D view (the keys are what the app's radio shows).
SIDE_BY_SIDE = "Orbit | capsule side by side"
COLOUR_MODES = ("Element", "Wyckoff orbit", "Dominant capsule", SIDE_BY_SIDE)

#: Palettes shared with the routing heatmaps, so a capsule has one colour on the whole page.
ORBIT_PALETTE = tuple(px.colors.qualitative.Dark24)
CAPSULE_PALETTE = tuple(px.colors.qualitative.D3)

MAX_VIEW_ATOMS = 4000  # atoms drawn at most (supercell plus boundary images), to keep the browser responsive
MAX_LABELLED_ATOMS = 150  # above this many drawn atoms, one label per orbit per cell (see label_sites)
#: Labels: small dark text on a light box beside the atom (not over it), always in front.
LABEL_STYLE = {
    "fontSize": 10,
    "fontColor": "#111111",
    "backgroundColor": "#ffffff",
    "backgroundOpacity": 0.8,
    "borderThickness": 0.5,
    "borderColor": "#888888",
    "inFront": True,
    "alignment": "bottomLeft",
    "screenOffset": {"x": 5, "y": -5},
}
ATOM_SCALE = 0.33  # sphere size (fraction of the van der Waals radius)
HIGHLIGHT_SCALE = 0.55  # the atom picked in the atom table, in all its drawn copies
MAX_HIGHLIGHT_LABELS = 64  # labels on the copies of the picked atom, at most
#: The label of the picked atom (table) and of the atom under the mouse: the same box, on yellow.
HIGHLIGHT_LABEL_STYLE = {**LABEL_STYLE, "fontSize": 12, "backgroundColor": "#ffe066", "backgroundOpacity": 0.95}
DETAILS_LABEL_STYLE = {**HIGHLIGHT_LABEL_STYLE, "borderColor": "#444444", "borderThickness": 1.0}
HOVER_MS = 150  # how long the mouse rests on an atom before its details show (3Dmol's default: 500)
BOUNDARY_TOLERANCE = 1e-3  # fractional; atoms this close to a cell face are also drawn on the opposite face
_HEX_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")


@dataclass(frozen=True)
class AtomColouring:
    """Colours for the atoms of one cell, with the legend that explains them."""

    title: str
    colours: tuple[str, ...]  # one "#rrggbb" per atom of the unit cell
    legend: tuple[tuple[str, str], ...]  # (label, "#rrggbb")


@dataclass(frozen=True)
class SiteDetails:
    """What the 3D view shows about one site of the unit cell when one of its drawn atoms is hovered,
    clicked or picked in the atom table. Plain text: it is JSON-escaped and set as ``textContent``."""

    label: str  # short text drawn beside the atom, e.g. "O 4c (1)"
    lines: tuple[str, ...]  # the details, one line each (the first is the heading)
    weights: tuple[float, ...] = ()  # the site's routing row, drawn as bars in the capsule colours


def local_script_available() -> bool:
    """True when ``npm ci`` has copied 3Dmol.js to ``app/static/`` (served at /app/static/)."""
    return LOCAL_3DMOL_FILE.is_file() and LOCAL_3DMOL_FILE.stat().st_size > 0


def script_url() -> str:
    """URL the viewer loads 3Dmol.js from: the local copy, or the CDN when it is missing."""
    return LOCAL_3DMOL_URL if local_script_available() else CDN_3DMOL_URL


# ---------------------------------------------------------------------------- colours


@lru_cache(maxsize=1)
def _jmol_colours() -> dict[str, str]:
    import pymatgen.vis

    path = Path(pymatgen.vis.__file__).parent / "ElementColorSchemes.yaml"
    scheme = loadfn(path)["Jmol"]
    return {el: "#{:02x}{:02x}{:02x}".format(*rgb) for el, rgb in scheme.items()}


def element_colour(symbol: str) -> str:
    """Jmol colour of an element (grey for anything unknown)."""
    return _jmol_colours().get(symbol, "#808080")


def orbit_colour(orbit: int) -> str:
    """Colour of Wyckoff orbit number ``orbit``."""
    return ORBIT_PALETTE[orbit % len(ORBIT_PALETTE)]


def capsule_colour(capsule: int) -> str:
    """Colour of pattern capsule number ``capsule`` (also used by the routing charts)."""
    return CAPSULE_PALETTE[capsule % len(CAPSULE_PALETTE)]


def colour_by_element(structure: Structure) -> AtomColouring:
    """Jmol element colours."""
    symbols = [site.specie.symbol for site in structure]
    order = sorted(set(symbols), key=symbols.index)
    return AtomColouring(
        "Element",
        tuple(element_colour(s) for s in symbols),
        tuple((s, element_colour(s)) for s in order),
    )


def colour_by_orbit(orbit_index: Sequence[int], orbit_labels: Sequence[str]) -> AtomColouring:
    """One colour per Wyckoff orbit; ``orbit_labels`` has one label (e.g. ``O 3c``) per orbit."""
    orbits = [int(k) for k in orbit_index]
    return AtomColouring(
        "Wyckoff orbit",
        tuple(orbit_colour(k) for k in orbits),
        tuple((label, orbit_colour(k)) for k, label in enumerate(orbit_labels)),
    )


def colour_by_capsule(dominant_capsule: Sequence[int], n_capsules: int) -> AtomColouring:
    """Each atom in the colour of the capsule that receives most of its routing."""
    caps = [int(c) for c in dominant_capsule]
    used = sorted(set(caps))
    return AtomColouring(
        "Dominant capsule",
        tuple(capsule_colour(c) for c in caps),
        tuple((f"capsule {c}", capsule_colour(c)) for c in used if c < n_capsules),
    )


# ---------------------------------------------------------------------------- geometry


def wrapped_frac_coords(structure: Structure) -> np.ndarray:
    """Fractional coordinates of the sites in [0, 1), as the view draws them (0.9999 is the face at 0)."""
    frac = np.mod(np.asarray(structure.frac_coords, dtype=float), 1.0)
    frac[frac > 1.0 - BOUNDARY_TOLERANCE] = 0.0
    return frac + 0.0  # no -0.0


def cell_atoms(structure: Structure, supercell: Sequence[int] = (1, 1, 1)) -> tuple[list[int], np.ndarray]:
    """Atoms to draw: the (super)cell, plus copies of atoms that sit on a cell face.

    Returns the unit-cell index of every drawn atom and their Cartesian positions (Å).
    """
    reps = np.array([max(1, int(n)) for n in supercell])
    frac = wrapped_frac_coords(structure)
    parents: list[int] = []
    positions: list[np.ndarray] = []
    for i, f in enumerate(frac):
        shifts = [list(range(n)) + ([n] if f[ax] < BOUNDARY_TOLERANCE else []) for ax, n in enumerate(reps)]
        for shift in itertools.product(*shifts):
            parents.append(i)
            positions.append(f + np.array(shift, dtype=float))
    cart = np.asarray(structure.lattice.get_cartesian_coords(np.array(positions)))
    return parents, cart


def labels_every_atom(n_drawn: int) -> bool:
    """Whether :func:`label_sites` labels each of ``n_drawn`` atoms (else one per label per cell)."""
    return n_drawn <= MAX_LABELLED_ATOMS


def label_sites(
    structure: Structure,
    parents: Sequence[int],
    cart: np.ndarray,
    supercell: Sequence[int],
    atom_labels: Sequence[str],
) -> list[tuple[str, np.ndarray]]:
    """(text, position) of the labels to draw: one on every drawn atom, supercell copies and atoms
    on cell faces included; above MAX_LABELLED_ATOMS drawn atoms, one per distinct label (orbit)
    in each cell of the supercell, so that labels stay readable."""
    texts = [str(atom_labels[i]) for i in parents]
    if labels_every_atom(len(parents)):
        return list(zip(texts, cart, strict=True))
    frac = np.asarray(structure.lattice.get_fractional_coords(cart))
    cells = np.clip(np.floor(frac + BOUNDARY_TOLERANCE), 0, np.asarray(supercell) - 1).astype(int)
    seen: set[tuple] = set()
    chosen = []
    for text, cell, position in zip(texts, cells, cart, strict=True):
        key = (text, *cell.tolist())
        if key not in seen:
            seen.add(key)
            chosen.append((text, position))
    return chosen


def _xyz_block(structure: Structure, parents: Sequence[int], cart: np.ndarray) -> str:
    lines = [str(len(parents)), "crystal"]
    for i, (x, y, z) in zip(parents, cart, strict=True):
        lines.append(f"{structure[i].specie.symbol} {x:.5f} {y:.5f} {z:.5f}")
    return "\n".join(lines) + "\n"


def _point(v: np.ndarray) -> dict[str, float]:
    return {"x": round(float(v[0]), 5), "y": round(float(v[1]), 5), "z": round(float(v[2]), 5)}


def _cell_edges(matrix: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    corners = {c: np.array(c, dtype=float) @ matrix for c in itertools.product((0, 1), repeat=3)}
    return [
        (corners[a], corners[b])
        for a, b in itertools.combinations(corners, 2)
        if sum(x != y for x, y in zip(a, b, strict=True)) == 1
    ]


# ---------------------------------------------------------------------------- the scene


def build_viewer_scene(
    structure: Structure,
    colourings: Sequence[AtomColouring],
    *,
    supercell: Sequence[int] = (1, 1, 1),
    atom_labels: Sequence[str] | None = None,
    height: int = 420,
    js_url: str | None = None,
    name: str = "",
    details: Sequence[SiteDetails] | None = None,
    highlight: int | None = None,
    camera: str | None = None,
) -> dict:
    """What the 3D view draws, as plain JSON data: one linked 3D view per colouring, and their legends.

    Args:
        structure: the crystal (unit cell) to draw.
        colourings: one or two :class:`AtomColouring` (two are shown side by side, rotating together).
        supercell: repetitions along a, b, c (each 1-3).
        atom_labels: optional text per unit-cell atom (e.g. its orbit label), drawn next to every
            drawn copy of the atom (see :func:`label_sites`).
        height: height of the 3D canvas in pixels (the legend adds a little).
        js_url: where 3Dmol.js is loaded from (default: the local copy, else the CDN).
        name: the crystal's name (the page sets it as the view's ``data-crystal``, for tests).
        details: one :class:`SiteDetails` per unit-cell atom: hovering a drawn atom (any supercell or
            boundary copy) shows its site's details in a box over the view, clicking pins them.
        highlight: a unit-cell atom drawn larger and labelled in all its copies, with its details pinned.
        camera: scenes with the same camera key keep the user's rotation and zoom from one to the next
            (default: the name, supercell and number of atoms).
    """
    _check_scene_inputs(structure, colourings, details, highlight)
    reps = tuple(min(3, max(1, int(n))) for n in supercell)
    parents, cart = cell_atoms(structure, reps)
    if len(parents) > MAX_VIEW_ATOMS:
        raise ValueError(
            f"{len(parents)} atoms are too many to draw; use a smaller supercell (at most {MAX_VIEW_ATOMS})"
        )
    if not np.all(np.isfinite(cart)):
        raise ValueError("atom positions must be finite numbers")
    matrix = structure.lattice.matrix
    labels = label_sites(structure, parents, cart, reps, atom_labels) if atom_labels is not None else []
    payload = None
    if details is not None:
        payload = atom_details_payload(structure, details, parents, cart, highlight)
        if not all(np.isfinite(w) for site in payload["sites"] for w in site[2]):
            raise ValueError("routing weights must be finite numbers")
    return {
        "name": str(name),
        "js": js_url or script_url(),
        "height": int(height),
        "camera": str(camera if camera is not None else f"{name}|{reps}|{len(structure)}"),
        "xyz": _xyz_block(structure, parents, cart),
        "views": [
            {
                "title": str(c.title),
                "styles": _styles(c, parents, highlight),
                "legend": [[str(label), _checked_colour(colour)] for label, colour in c.legend],
            }
            for c in colourings
        ],
        "cell": [[_point(a), _point(b)] for a, b in _cell_edges(matrix)],
        "axes": [[axis, _point(1.08 * vector)] for axis, vector in zip("abc", matrix, strict=True)],
        "labels": [[str(text), _point(position)] for text, position in labels],
        "labelStyle": LABEL_STYLE,
        "highlightLabels": _highlight_labels(structure, details, highlight, parents, cart),
        "highlightStyle": HIGHLIGHT_LABEL_STYLE,
        "details": payload,
        "elements": None,
        # A slightly oblique start shows the cell as a 3D box rather than a flat square;
        # zooming out a little keeps the cell edges and axis labels inside the canvas.
        "rotate": [[-18, "x"], [28, "y"]],
        "zoom": 0.85,
    }


def _check_scene_inputs(structure: Structure, colourings, details, highlight) -> None:
    if not colourings:
        raise ValueError("need at least one colouring")
    for colouring in colourings:
        if len(colouring.colours) != len(structure):
            raise ValueError(f"{colouring.title}: {len(colouring.colours)} colours for {len(structure)} atoms")
    if details is not None and len(details) != len(structure):
        raise ValueError(f"{len(details)} site details for {len(structure)} atoms")
    if highlight is not None and not 0 <= int(highlight) < len(structure):
        raise ValueError(f"no atom {highlight} to highlight")


def _highlight_labels(structure: Structure, details, highlight: int | None, parents, cart) -> list:
    """[text, position] of the labels on the copies of the highlighted atom (at most MAX_HIGHLIGHT_LABELS)."""
    if highlight is None:
        return []
    text = details[int(highlight)].label if details is not None else structure[int(highlight)].specie.symbol
    drawn = [d for d, p in enumerate(parents) if p == int(highlight)][:MAX_HIGHLIGHT_LABELS]
    return [[str(text), _point(cart[d])] for d in drawn]


def _styles(colouring: AtomColouring, parents: Sequence[int], highlight: int | None) -> list:
    """[drawn atom indices, colour, sphere scale] per group (the highlighted atom's copies larger).
    Spheres only: distance-based bonds (what 3Dmol would draw) join e.g. Sr-Sr in SrTiO3."""
    groups: dict[tuple[str, bool], list[int]] = {}
    for drawn, parent in enumerate(parents):
        key = (_checked_colour(colouring.colours[parent]), highlight is not None and parent == int(highlight))
        groups.setdefault(key, []).append(drawn)
    return [[indices, colour, HIGHLIGHT_SCALE if big else ATOM_SCALE] for (colour, big), indices in groups.items()]


def atom_details_payload(
    structure: Structure,
    details: Sequence[SiteDetails],
    parents: Sequence[int],
    cart: np.ndarray,
    highlight: int | None = None,
) -> dict:
    """The data the view's hover script gets: per site [label, lines, weights]; per drawn atom its site
    and the cell it is drawn in (lattice translation from the site in [0, 1)); capsule colours."""
    frac = np.asarray(structure.lattice.get_fractional_coords(cart)) if len(parents) else np.zeros((0, 3))
    shifts = np.rint(frac - wrapped_frac_coords(structure)[list(parents)]).astype(int) if len(parents) else frac
    n_weights = max((len(d.weights) for d in details), default=0)
    return {
        "sites": [[str(d.label), [str(t) for t in d.lines], [round(float(w), 4) for w in d.weights]] for d in details],
        "parents": [int(p) for p in parents],
        "shifts": [[int(x) for x in s] for s in shifts],
        "colours": [capsule_colour(k) for k in range(n_weights)],
        "highlight": -1 if highlight is None else int(highlight),
        "label": DETAILS_LABEL_STYLE,
        "hoverMs": HOVER_MS,
    }


def _checked_colour(colour: str) -> str:
    if not _HEX_COLOUR.match(colour):
        raise ValueError(f"not a #rrggbb colour: {colour!r}")
    return colour


def viewer_height(canvas_height: int, n_views: int = 1) -> int:
    """Height (px) of the view: the canvas, the views' titles (side by side) and the legend area, whose
    height is fixed (it scrolls when it is full) so that the view keeps its size when the legend changes."""
    return int(canvas_height) + (26 if n_views > 1 else 0) + 88


@lru_cache(maxsize=1)
def _component():
    import streamlit.components.v1 as components

    return components.declare_component("crystal_view", path=str(COMPONENT_DIR))


def render_viewer(scene: dict, height: int, key: str = "crystal_view") -> None:
    """Show a scene in the Streamlit app: the view (app/viewer_component/) stays on the page from one
    rerun to the next, so a new scene is redrawn in place (no new document or WebGL context).

    ``key`` names the view; two views on one page need two keys.
    """
    _component()(scene=scene, height=int(height), key=key, default=None)


# ---------------------------------------------------------------------------- symmetry elements

#: Colours of rotation and screw axes by order (2, 3, 4, 6), of planes and of inversion centres.
AXIS_COLOURS = {2: "#1f77b4", 3: "#2ca02c", 4: "#d62728", 6: "#9467bd"}
MIRROR_COLOUR = "#3b8fd9"
GLIDE_COLOUR = "#f28e2b"
CENTRE_COLOUR = "#222222"
ELEMENT_KINDS = ("rotation axes", "screw axes", "mirror planes", "glide planes", "inversion centres")
MAX_ELEMENT_SHAPES = 600  # cylinders + planes + spheres drawn at most (two-fold axes are left out first)


@dataclass(frozen=True)
class ElementShapes:
    """3Dmol shapes of symmetry elements, Cartesian (Å), in the frame of the structure's lattice."""

    cylinders: tuple[tuple, ...]  # (start xyz, end xyz, radius, colour, dashed)
    planes: tuple[tuple, ...]  # (corners ((x, y, z), ...), colour)
    spheres: tuple[tuple, ...]  # (centre xyz, radius, colour)
    legend: tuple[tuple[str, str], ...]  # (label, colour)
    left_out: int = 0  # elements not drawn because of MAX_ELEMENT_SHAPES

    @property
    def n_shapes(self) -> int:
        """Number of shapes drawn."""
        return len(self.cylinders) + len(self.planes) + len(self.spheres)


def symmetry_element_shapes(
    elements,
    kinds: Sequence[str] = ELEMENT_KINDS,
    supercell: Sequence[int] = (1, 1, 1),
    max_shapes: int = MAX_ELEMENT_SHAPES,
) -> ElementShapes:
    """Shapes for the symmetry elements of ``elements`` (a :class:`sen.symmetry_elements.SymmetryElements`
    of the drawn cell): rotation axes as solid cylinders and screw axes as dashed ones, coloured by
    order; mirror planes translucent blue, glide planes translucent orange; inversion centres as small
    dark spheres. Each is repeated in every cell of ``supercell``. Two-fold axes are dropped first, then
    glide planes, when there would be more than ``max_shapes``."""
    from sen.symmetry_elements import axis_segments, centre_copies, plane_polygons

    lattice = np.asarray(elements.lattice, dtype=float)
    reps = [min(3, max(1, int(n))) for n in supercell]
    offsets = [np.array(o, dtype=float) for o in itertools.product(*(range(n) for n in reps))]
    wanted = set(kinds)
    groups: list[tuple[int, str, list]] = []  # (priority: lower is kept first, kind, shapes)
    legend: dict[str, str] = {}
    for axis in elements.axes:
        if axis.rotoinversion:
            continue
        kind = "screw axes" if axis.screw else "rotation axes"
        if kind not in wanted:
            continue
        colour = AXIS_COLOURS.get(axis.order, "#7f7f7f")
        legend.setdefault(f"{axis.order}-fold axis", colour)
        shapes = [
            (lattice.T @ (np.array(a) + o), lattice.T @ (np.array(b) + o), 0.09 if not axis.screw else 0.07, colour,
             bool(axis.screw))
            for a, b in axis_segments(axis)
            for o in offsets
        ]  # fmt: skip
        groups.append((2 if axis.order == 2 else 0, "cylinder", shapes))
    for plane in elements.planes:
        kind = "mirror planes" if plane.is_mirror else "glide planes"
        if kind not in wanted:
            continue
        colour = MIRROR_COLOUR if plane.is_mirror else GLIDE_COLOUR
        legend.setdefault("mirror plane" if plane.is_mirror else "glide plane", colour)
        shapes = [(tuple(lattice.T @ (np.array(c) + o) for c in poly), colour) for poly in plane_polygons(plane)
                  for o in offsets]  # fmt: skip
        groups.append((1 if plane.is_mirror else 3, "plane", shapes))
    if "inversion centres" in wanted:
        for centre in elements.centres:
            shapes = [(lattice.T @ (np.array(c) + o), 0.12, CENTRE_COLOUR) for c in centre_copies(centre)
                      for o in offsets]  # fmt: skip
            legend.setdefault("inversion centre", CENTRE_COLOUR)
            groups.append((0, "sphere", shapes))
    cylinders, planes, spheres, left_out, used = [], [], [], 0, 0
    for _, shape, items in sorted(groups, key=lambda g: g[0]):
        if used + len(items) > max_shapes:
            left_out += 1
            continue
        used += len(items)
        {"cylinder": cylinders, "plane": planes, "sphere": spheres}[shape].extend(items)
    order = [
        "6-fold axis",
        "4-fold axis",
        "3-fold axis",
        "2-fold axis",
        "mirror plane",
        "glide plane",
        "inversion centre",
    ]
    return ElementShapes(
        tuple(cylinders), tuple(planes), tuple(spheres),
        tuple((k, legend[k]) for k in order if k in legend), left_out,
    )  # fmt: skip


def _numbers(v) -> list[float]:
    values = [round(float(x), 4) for x in v]
    if not all(np.isfinite(values)):
        raise ValueError("symmetry element coordinates must be finite numbers")
    return values


def add_symmetry_elements(scene: dict, shapes: ElementShapes, opacity: float = 0.35) -> dict:
    """``scene`` (from :func:`build_viewer_scene`) with the symmetry-element shapes drawn into its (first)
    3D view and their legend: only numbers and checked ``#rrggbb`` colours, and fixed label texts."""
    colours = sorted({_checked_colour(c) for c in [*(s[3] for s in shapes.cylinders), *(p[1] for p in shapes.planes),
                                                   *(s[2] for s in shapes.spheres)]})  # fmt: skip
    index = {c: i for i, c in enumerate(colours)}
    elements = {
        "colours": colours,
        "c": [
            [*_numbers(a), *_numbers(b), round(float(r), 4), index[c], bool(d)] for a, b, r, c, d in shapes.cylinders
        ],
        "p": [[[_numbers(v) for v in corners], index[c]] for corners, c in shapes.planes],
        "s": [[*_numbers(p), round(float(r), 4), index[c]] for p, r, c in shapes.spheres],
        "opacity": round(min(1.0, max(0.0, float(opacity))), 3),
        "legend": [[str(label), _checked_colour(colour)] for label, colour in shapes.legend],
        "n": int(shapes.n_shapes),
    }
    return {**scene, "elements": elements}
