"""Teaching symmetry live: distort or substitute the crystal, compare two crystals, see the symmetry
elements in the 3D view, and share it all as a link.

The page calls, in this order (see each function): :func:`read_link` before the sidebar,
:func:`teaching_controls` once the crystal is read (it returns the crystal to show, changed or not),
:func:`symmetry_change` under the prediction, :func:`symmetry_elements_toggle` and
:func:`with_symmetry_elements` (or :func:`elements_view`) for the 3D view, :func:`compare_view`, and
:func:`write_link` last. The library work is in :mod:`sen.teaching` and :mod:`sen.symmetry_elements`.

Link format (every value is validated and bounded; a bad one gives one warning line and is ignored):

* ``example=srtio3_perovskite``: a gallery crystal, by file name without ``.cif``;
* ``displace=Ti:0,0,0.1``: move the atoms of an orbit (an element symbol, its first orbit; an orbit
  label without the space such as ``O3c``; or an orbit number) along the lattice direction [u v w]
  = [0 0 0.1] by |(u, v, w)| Å: the three numbers are the direction times the amplitude in Å;
* ``strain=c:2``: strain in % (``a``, ``b``, ``c`` uniaxial; ``ab``, ``bc``, ``ca`` shear), |%| <= 30;
* ``rattle=0.05:7``: random displacements up to 0.05 Å (at most 0.5), seed 7;
* ``substitute=Na:K`` (cell scaled by radii), ``Na:K:keep`` or ``Na:K:1.1`` (volume factor);
* ``supercell=2,2,2`` (1-3 each), ``colour=element|orbit|capsule|both``,
  ``compare=<gallery name>|original``, ``elements=1`` (draw symmetry elements).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import streamlit as st
from pymatgen.core import Structure

from app import charts, viewer
from app.common import literal, panel
from app.gallery import Example
from app.results import (
    TITLES,
    UNITS,
    ComputeError,
    CrystalFile,
    explain_crystal,
    orbit_table,
    read_crystal,
    routing_data,
    symmetry_view,
)
from sen.errors import StructureError, first_line
from sen.io import structure_to_json
from sen.predict import Predictor
from sen.symmetry import DEFAULT_ANGLE_TOLERANCE, DEFAULT_SYMPREC, analyze_symmetry
from sen.symmetry_elements import cell_symmetry_elements
from sen.teaching import (
    MAX_DISPLACEMENT,
    MAX_RATTLE,
    MAX_SEED,
    MAX_STRAIN,
    STRAIN_MODES,
    VOLUME_FACTOR_RANGE,
    Edits,
    SymmetryComparison,
    apply_edits,
    check_element,
    compare_symmetry,
)

#: ``colour=`` values and the sidebar's colour modes.
COLOUR_NAMES = dict(zip(("element", "orbit", "capsule", "both"), viewer.COLOUR_MODES, strict=True))
ORIGINAL = "original"  # compare=original: the crystal before the changes
NO_CHANGE = "(none)"
VOLUME_CHOICES = ("scale by radii", "keep", "factor")
_MAX_VALUE = 100  # characters of one query value that are read at all
_SELECTOR = re.compile(r"^[A-Za-z0-9 _]{1,12}$")
_PENDING = "_teach_pending"  # session state: changes from the link, applied once the crystal is known
_SEEDED = "_teach_link_read"
_DIGEST = "_teach_digest"
_CONTROL_KEYS = ("teach_orbit", "teach_u", "teach_v", "teach_w", "teach_amp", "teach_strain_mode", "teach_strain",
                 "teach_rattle", "teach_seed", "teach_sub_old", "teach_sub_new", "teach_volume",
                 "teach_volume_factor")  # fmt: skip
_DEFAULTS = {"teach_orbit": NO_CHANGE, "teach_u": 0.0, "teach_v": 0.0, "teach_w": 1.0, "teach_amp": 0.0,
             "teach_strain_mode": NO_CHANGE, "teach_strain": 0.0, "teach_rattle": 0.0, "teach_seed": 0,
             "teach_sub_old": NO_CHANGE, "teach_sub_new": "K", "teach_volume": VOLUME_CHOICES[0],
             "teach_volume_factor": 1.0}  # fmt: skip


# ---------------------------------------------------------------------------- the link


@dataclass
class LinkState:
    """What a link asks for (already validated), and one line per parameter that could not be used."""

    example: str | None = None  # gallery file name, e.g. "srtio3_perovskite.cif"
    displace: tuple[str, tuple[float, float, float], float] | None = None  # (orbit selector, [u v w], Å)
    strain: tuple[str, float] | None = None
    rattle: tuple[float, int] | None = None
    substitute: tuple[str, str, str | float] | None = None  # (element or orbit, new element, "radii"/"keep"/factor)
    supercell: tuple[int, int, int] | None = None
    colour: str | None = None  # a key of COLOUR_NAMES
    compare: str | None = None  # gallery file name or ORIGINAL
    elements: bool | None = None
    errors: list[str] = field(default_factory=list)

    def edits(self) -> Edits:
        """The changes to the crystal that the link asks for."""
        return Edits(self.substitute, self.strain, self.displace, self.rattle)


def _numbers(text: str, n: int, name: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != n:
        raise ValueError(f"{name} needs {n} numbers separated by commas")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name} needs numbers, got {text[:30]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} needs finite numbers")
    return values


def _bounded(value: float, low: float, high: float, name: str, unit: str = "") -> float:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}{unit}, got {value:g}")
    return value


def _selector(text: str, name: str) -> str:
    text = text.strip()
    if not _SELECTOR.match(text):
        raise ValueError(f"{name} needs an element, an orbit label such as O3c, or an orbit number")
    return text


def _gallery_file(name: str, gallery: Sequence[Example]) -> str:
    stem = name.strip().lower().removesuffix(".cif")
    for example in gallery:
        if Path(example.file).stem.lower() == stem:
            return example.file
    names = ", ".join(Path(e.file).stem for e in gallery[:6])
    raise ValueError(f"no example crystal {name[:30]!r} (examples: {names}, ...)")


def parse_link(params: Mapping[str, str], gallery: Sequence[Example]) -> LinkState:
    """Read the page state from query parameters (see the module docstring); never raises: a value that
    cannot be used is left out, with a one-line reason in ``errors``."""
    state = LinkState()

    def value(key: str) -> str | None:
        raw = params.get(key)
        if isinstance(raw, list):  # a repeated parameter: the last one counts
            raw = raw[-1] if raw else None
        return None if raw is None else str(raw)[:_MAX_VALUE]

    parsers = {
        "example": lambda v: setattr(state, "example", _gallery_file(v, gallery)),
        "displace": lambda v: setattr(state, "displace", _parse_displace(v)),
        "strain": lambda v: setattr(state, "strain", _parse_strain(v)),
        "rattle": lambda v: setattr(state, "rattle", _parse_rattle(v)),
        "substitute": lambda v: setattr(state, "substitute", _parse_substitute(v)),
        "supercell": lambda v: setattr(state, "supercell", _parse_supercell(v)),
        "colour": lambda v: setattr(state, "colour", _parse_colour(v)),
        "compare": lambda v: setattr(
            state, "compare", ORIGINAL if v.strip().lower() == ORIGINAL else _gallery_file(v, gallery)
        ),  # fmt: skip
        "elements": lambda v: setattr(state, "elements", _parse_flag(v)),
    }
    for key, parse in parsers.items():
        text = value(key)
        if text is None:
            continue
        try:
            parse(text)
        except (ValueError, StructureError) as exc:
            state.errors.append(f"Link parameter {key}={text[:40]}: {first_line(exc)}; ignored.")
    return state


def _parse_displace(text: str):
    selector, sep, rest = text.partition(":")
    if not sep:
        raise ValueError("write it as ORBIT:u,v,w, e.g. Ti:0,0,0.1")
    u, v, w = _numbers(rest, 3, "the displacement")
    amplitude = math.sqrt(u * u + v * v + w * w)
    if amplitude == 0:
        raise ValueError("the displacement is zero")
    _bounded(amplitude, 0, MAX_DISPLACEMENT, "the displacement's length", " Å")
    return _selector(selector, "the orbit"), (u / amplitude, v / amplitude, w / amplitude), amplitude


def _parse_strain(text: str):
    mode, sep, rest = text.partition(":")
    if not sep or mode.strip() not in STRAIN_MODES:
        raise ValueError(f"write it as MODE:percent with MODE one of {', '.join(STRAIN_MODES)}")
    (percent,) = _numbers(rest, 1, "the strain")
    return mode.strip(), _bounded(percent, -MAX_STRAIN, MAX_STRAIN, "the strain", " %")


def _parse_rattle(text: str):
    amp, sep, seed = text.partition(":")
    (amplitude,) = _numbers(amp, 1, "the rattle amplitude")
    (seed_value,) = _numbers(seed or "0", 1, "the seed")
    if seed_value != int(seed_value):
        raise ValueError("the seed must be a whole number")
    return _bounded(amplitude, 0, MAX_RATTLE, "the rattle amplitude", " Å"), int(
        _bounded(seed_value, 0, MAX_SEED, "the seed")
    )


def _parse_substitute(text: str):
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError("write it as OLD:NEW, OLD:NEW:keep or OLD:NEW:factor, e.g. Na:K")
    old = _selector(parts[0], "the element to replace")
    new = check_element(parts[1])
    volume: str | float = "radii"
    if len(parts) == 3:
        choice = parts[2].strip().lower()
        if choice in ("keep", "radii"):
            volume = choice
        else:
            (factor,) = _numbers(choice, 1, "the volume factor")
            volume = _bounded(factor, *VOLUME_FACTOR_RANGE, "the volume factor")
    return old, new, volume


def _parse_supercell(text: str):
    values = _numbers(text, 3, "supercell")
    if any(v != int(v) or not 1 <= v <= 3 for v in values):
        raise ValueError("supercell needs three whole numbers from 1 to 3")
    return tuple(int(v) for v in values)


def _parse_colour(text: str):
    name = text.strip().lower()
    if name not in COLOUR_NAMES:
        raise ValueError(f"colour must be one of {', '.join(COLOUR_NAMES)}")
    return name


def _parse_flag(text: str) -> bool:
    flag = text.strip().lower()
    if flag in ("1", "on", "true", "yes"):
        return True
    if flag in ("0", "off", "false", "no"):
        return False
    raise ValueError("use 1 or 0")


def link_params(state: LinkState) -> dict[str, str]:
    """Query parameters for ``state`` (the inverse of :func:`parse_link`; empty parts are left out)."""
    out: dict[str, str] = {}
    if state.example:
        out["example"] = Path(state.example).stem
    if state.displace:
        selector, direction, amplitude = state.displace
        norm = math.sqrt(sum(float(x) ** 2 for x in direction)) or 1.0
        out["displace"] = f"{selector.replace(' ', '')}:" + ",".join(
            _short(float(x) * amplitude / norm) for x in direction
        )
    if state.strain:
        out["strain"] = f"{state.strain[0]}:{_short(state.strain[1])}"
    if state.rattle:
        out["rattle"] = f"{_short(state.rattle[0])}:{int(state.rattle[1])}"
    if state.substitute:
        old, new, volume = state.substitute
        tail = "" if volume == "radii" else f":{volume}" if isinstance(volume, str) else f":{_short(volume)}"
        out["substitute"] = f"{old.replace(' ', '')}:{new}{tail}"
    if state.supercell and tuple(state.supercell) != (1, 1, 1):
        out["supercell"] = ",".join(str(int(n)) for n in state.supercell)
    if state.colour and state.colour != "element":
        out["colour"] = state.colour
    if state.compare:
        out["compare"] = state.compare if state.compare == ORIGINAL else Path(state.compare).stem
    if state.elements:
        out["elements"] = "1"
    return out


def _short(x: float) -> str:
    text = f"{x:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def read_link(gallery: Sequence[Example]) -> LinkState:
    """Call at the top of the page, before ``sidebar()``. On a session's first run it reads
    ``st.query_params``, seeds the sidebar's widgets (example, supercell, colour) and remembers the
    changes for :func:`teaching_controls`; one warning line per parameter it could not use."""
    if st.session_state.get(_SEEDED):
        return LinkState()
    st.session_state[_SEEDED] = True
    state = parse_link(dict(st.query_params), gallery)
    for line in state.errors:
        st.warning(literal(line))
    if state.example:
        st.session_state["example"] = next(i for i, e in enumerate(gallery) if e.file == state.example)
    if state.supercell:
        for axis, n in zip("abc", state.supercell, strict=True):
            st.session_state[f"supercell_{axis}"] = n
    if state.colour:
        st.session_state["colour_mode"] = COLOUR_NAMES[state.colour]
    if state.elements is not None:
        st.session_state["teach_elements"] = state.elements
    if state.compare:
        st.session_state["_teach_compare_link"] = state.compare
    if not state.edits().empty:
        st.session_state[_PENDING] = state
    return state


# ---------------------------------------------------------------------------- changing the crystal


@dataclass(frozen=True)
class Edited:
    """The crystal as read, the crystal to show (changed, or the same) and what changed."""

    original: CrystalFile
    original_structure: Structure
    crystal: CrystalFile
    structure: Structure
    edits: Edits = field(default_factory=Edits)
    steps: tuple[str, ...] = ()
    comparison: SymmetryComparison | None = None
    error: str | None = None  # why the changes could not be made (the original is shown)

    @property
    def changed(self) -> bool:
        """True when the crystal shown is not the one read."""
        return bool(self.steps)


def _orbit_names(report) -> list[str]:
    from app.results import unique_orbit_names

    return unique_orbit_names(report)


def _apply_pending(report, elements: list[str]) -> None:
    """Put the link's changes into the controls' state (first run only), now that the orbits are known."""
    state: LinkState | None = st.session_state.pop(_PENDING, None)
    if state is None:
        return
    names = _orbit_names(report)
    from sen.teaching import resolve_orbit

    if state.displace:
        selector, direction, amplitude = state.displace
        try:
            st.session_state["teach_orbit"] = names[resolve_orbit(report, selector)]
            st.session_state["teach_u"], st.session_state["teach_v"], st.session_state["teach_w"] = (
                round(float(x), 4) for x in direction
            )
            st.session_state["teach_amp"] = round(float(amplitude), 4)
        except StructureError as exc:
            st.warning(literal(f"Link parameter displace: {exc}; ignored."))
    if state.strain:
        st.session_state["teach_strain_mode"], st.session_state["teach_strain"] = (
            state.strain[0],
            float(state.strain[1]),
        )
    if state.rattle:
        st.session_state["teach_rattle"], st.session_state["teach_seed"] = float(state.rattle[0]), int(state.rattle[1])
    if state.substitute:
        old, new, volume = state.substitute
        options = _substitution_targets(report)
        if old.isdigit() and int(old) < report.n_orbits:
            old = names[int(old)]
        match = next((o for o in options if o.replace(" ", "").lower() == old.replace(" ", "").lower()), None)
        if match is None:
            st.warning(literal(f"Link parameter substitute: there is no {old} in this crystal; ignored."))
        else:
            st.session_state["teach_sub_old"], st.session_state["teach_sub_new"] = match, new
            if new not in elements:
                st.session_state["_teach_refused"] = new
            if volume == "keep":
                st.session_state["teach_volume"] = "keep"
            elif isinstance(volume, float):
                st.session_state["teach_volume"], st.session_state["teach_volume_factor"] = "factor", volume


def _substitution_targets(report) -> list[str]:
    elements = sorted({o.element for o in report.orbits}, key=[o.element for o in report.orbits].index)
    names = _orbit_names(report)
    per_element = {e: sum(o.element == e for o in report.orbits) for e in elements}
    return elements + [n for n, o in zip(names, report.orbits, strict=True) if per_element[o.element] > 1]


def _reset_on_new_crystal(digest: str) -> None:
    if st.session_state.get(_DIGEST) not in (None, digest) and _PENDING not in st.session_state:
        for key in _CONTROL_KEYS:
            st.session_state.pop(key, None)
    st.session_state[_DIGEST] = digest
    for key, default in _DEFAULTS.items():
        st.session_state.setdefault(key, default)


def training_elements(predictor: Predictor | None) -> list[str]:
    """The elements the model saw in training (by atomic number); all elements when unknown."""
    from pymatgen.core import Element

    trained = (predictor.card.get("training_elements") if predictor is not None else None) or []
    if not trained:
        trained = [e.symbol for e in Element if e.Z <= 94]
    return sorted({str(e) for e in trained}, key=lambda s: Element(s).Z)


def teaching_controls(
    crystal: CrystalFile,
    structure: Structure,
    predictor: Predictor | None,
    symprec: float = DEFAULT_SYMPREC,
    angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE,
    where=None,
) -> Edited:
    """The "Distort" and "Substitute" control groups (in ``where``, default the sidebar); returns the
    crystal to show. Call it after the crystal is read and before the prediction; pass on
    ``edited.crystal`` and ``edited.structure`` to the rest of the page."""
    where = where if where is not None else st.sidebar
    unchanged = Edited(crystal, structure, crystal, structure)
    try:  # the symmetry panel's analysis of the same file (cached), not a second one
        report = symmetry_view(crystal, symprec, angle_tolerance).report
    except (StructureError, ComputeError) as exc:  # already logged; the page goes on with the crystal as it is
        where.caption(literal(f"Changing the crystal needs its symmetry: {exc}"))
        return unchanged
    elements = training_elements(predictor)
    _reset_on_new_crystal(crystal.digest)
    _apply_pending(report, elements)
    with where:
        st.header("Teach symmetry")
        edits = _distort_controls(report)
        substitution = _substitute_controls(report, elements)
    edits = Edits(substitution, edits.strain, edits.displace, edits.rattle)
    if edits.empty:
        return unchanged
    return _edited(crystal, structure, edits, elements, symprec, angle_tolerance)


def _edited(crystal, structure, edits: Edits, elements, symprec: float, angle_tolerance: float) -> Edited:
    try:
        result = apply_edits(structure, edits, elements, symprec)
        comparison = compare_symmetry(structure, result.structure, symprec, angle_tolerance)
    except StructureError as exc:
        return Edited(crystal, structure, crystal, structure, edits, error=str(exc))
    stem = Path(crystal.name).stem
    changed = CrystalFile.from_bytes(
        f"{stem}_changed.json",
        structure_to_json(result.structure).encode(),
        origin=crystal.origin,
        title=f"{crystal.title}, changed",
        source=f"{crystal.source}; changed here: {'; '.join(result.steps)}" if crystal.source else "",
    )
    return Edited(crystal, structure, changed, read_crystal(changed), edits, result.steps, comparison)


def _distort_controls(report) -> Edits:
    names = [NO_CHANGE, *_orbit_names(report)]
    if st.session_state.get("teach_orbit") not in names:
        st.session_state["teach_orbit"] = NO_CHANGE
    with st.expander("Distort: watch the symmetry break", expanded=True):
        orbit = st.selectbox("Move the atoms of orbit", names, key="teach_orbit",
                             help="Every atom of the orbit moves by the same vector.")  # fmt: skip
        st.caption("Direction [u v w] along the lattice vectors a, b, c")
        columns = st.columns(3)
        direction = tuple(
            float(column.number_input(axis, min_value=-10.0, max_value=10.0, step=1.0, key=f"teach_{axis}"))
            for column, axis in zip(columns, "uvw", strict=True)
        )
        amplitude = st.number_input("Distance (Å)", min_value=-MAX_DISPLACEMENT, max_value=MAX_DISPLACEMENT,
                                    step=0.05, format="%.3f", key="teach_amp")  # fmt: skip
        modes = [NO_CHANGE, *STRAIN_MODES]
        mode = st.selectbox("Strain the cell", modes, key="teach_strain_mode",
                            format_func=lambda m: STRAIN_MODES.get(m, m))  # fmt: skip
        percent = st.number_input("Strain (%)", min_value=-MAX_STRAIN, max_value=MAX_STRAIN, step=0.5,
                                  key="teach_strain")  # fmt: skip
        rattle = st.number_input("Rattle every atom by up to (Å)", min_value=0.0, max_value=MAX_RATTLE, step=0.01,
                                 format="%.3f", key="teach_rattle")  # fmt: skip
        seed = st.number_input("Random seed", min_value=0, max_value=MAX_SEED, step=1, key="teach_seed")
    displace = None
    if orbit != NO_CHANGE and amplitude != 0 and any(direction):
        displace = (names.index(orbit) - 1, direction, float(amplitude))
    strain = (mode, float(percent)) if mode != NO_CHANGE and percent != 0 else None
    return Edits(None, strain, displace, (float(rattle), int(seed)) if rattle > 0 else None)


def _substitute_controls(report, elements: list[str]):
    targets = [NO_CHANGE, *_substitution_targets(report)]
    if st.session_state.get("teach_sub_old") not in targets:
        st.session_state["teach_sub_old"] = NO_CHANGE
    refused = st.session_state.get("_teach_refused")
    choices = elements + ([refused] if refused and refused not in elements else [])
    if st.session_state.get("teach_sub_new") not in choices:
        st.session_state["teach_sub_new"] = choices[0]
    with st.expander("Substitute an element", expanded=True):
        old = st.selectbox("Replace", targets, key="teach_sub_old",
                           help="An element (all its atoms) or, where an element has several orbits, one orbit.")  # fmt: skip
        new = st.selectbox("by", choices, key="teach_sub_new",
                           help="Only elements the model saw in training are offered.")  # fmt: skip
        volume = st.radio("Cell volume", VOLUME_CHOICES, key="teach_volume", horizontal=True,
                          help="Scale by radii: bonds of the replaced atoms change by the change of tabulated "
                          "radii (ionic when oxidation states can be guessed, metallic for metals, else atomic).")  # fmt: skip
        factor = st.number_input("Volume factor", min_value=VOLUME_FACTOR_RANGE[0], max_value=VOLUME_FACTOR_RANGE[1],
                                 step=0.01, key="teach_volume_factor", disabled=volume != "factor")  # fmt: skip
    if old == NO_CHANGE:
        return None
    names = _orbit_names(report)
    if old in names and old not in {o.element for o in report.orbits}:
        old = str(names.index(old))  # one orbit of an element with several: by its number
    amount: str | float = {"scale by radii": "radii", "keep": "keep"}.get(volume, float(factor))
    return old, new, amount


@panel("symmetry change")
def symmetry_change(edited: Edited) -> None:
    """What the change did to the symmetry: the group-subgroup step, split orbits, in plain words
    (nothing when the crystal is unchanged). Call it right after the prediction."""
    if edited.error:
        st.error(literal(f"The crystal was not changed: {edited.error}"))
        return
    if not edited.changed or edited.comparison is None:
        return
    comparison = edited.comparison
    st.markdown("**What the change did to the symmetry**")
    st.markdown(f"{literal('; '.join(edited.steps))}")
    st.markdown(f"**{literal(comparison.step)}** · point group {literal(comparison.before.point_group)} → "
                f"{literal(comparison.after.point_group)}")  # fmt: skip
    rows = [{"orbit before": s.before, "orbits after": " + ".join(s.after), "split": "yes" if s.split else "no"}
            for s in comparison.splits]  # fmt: skip
    if rows:
        st.table(rows, hide_index=True, border="horizontal")
    geometric = any((edited.edits.strain, edited.edits.displace, edited.edits.rattle))
    st.info(literal(comparison.explanation("The change", geometric=geometric)))


# ---------------------------------------------------------------------------- symmetry elements


def symmetry_elements_toggle(where=None) -> bool:
    """The "Symmetry elements" switch for the 3D view (default in the sidebar); returns whether it is on."""
    where = where if where is not None else st.sidebar
    st.session_state.setdefault("teach_elements", False)
    return bool(where.toggle("Show symmetry elements", key="teach_elements",
                             help="Rotation and screw axes (coloured by order), mirror and glide planes and "
                             "inversion centres of the cell drawn, as spglib finds them."))  # fmt: skip


@st.cache_data(max_entries=128, show_spinner=False)
def _elements_cached(digest: str, symprec: float, angle_tolerance: float, _structure: Structure):
    return cell_symmetry_elements(_structure, symprec, angle_tolerance)


def with_symmetry_elements(
    scene: dict,
    crystal: CrystalFile,
    structure: Structure,
    symprec: float = DEFAULT_SYMPREC,
    angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE,
    supercell: Sequence[int] = (1, 1, 1),
) -> tuple[dict, str]:
    """The view's scene with the crystal's symmetry elements drawn in, and a caption saying what is drawn."""
    elements = _elements_cached(crystal.digest, float(symprec), float(angle_tolerance), structure)
    shapes = viewer.symmetry_element_shapes(elements, supercell=supercell)
    counts = elements.counts()
    axes = ", ".join(f"{k}: {v}" for k, v in counts.items() if k != "-1" and not k.isalpha())
    caption = (
        f"Symmetry elements of {elements.space_group_symbol} in this cell: axes ({axes or 'none'}), "
        f"{sum(v for k, v in counts.items() if k.isalpha())} mirror or glide planes, {counts.get('-1', 0)} "
        "inversion centres. Solid lines: rotation axes; dashed: screw axes; blue planes: mirrors; orange: glides; "
        "dark dots: inversion centres."
    )
    if shapes.left_out:
        caption += f" {shapes.left_out} groups of elements (two-fold axes first) are not drawn, to keep the view clear."
    return viewer.add_symmetry_elements(scene, shapes), caption


@panel("3D view with symmetry elements")
def elements_view(crystal: CrystalFile, structure: Structure, settings, show_elements: bool, height: int = 420) -> None:
    """A 3D view coloured by element (or by orbit when the sidebar says so) with the symmetry elements
    when ``show_elements``; ``settings`` is the sidebar's (symprec, angle_tolerance, supercell, colour_mode)."""
    report = analyze_symmetry(structure, settings.symprec, settings.angle_tolerance)
    if settings.colour_mode == viewer.COLOUR_MODES[1]:
        colouring = viewer.colour_by_orbit(report.orbit_index, _orbit_names(report))
    else:
        colouring = viewer.colour_by_element(structure)
    supercell = (
        settings.supercell
        if len(structure) * math.prod(settings.supercell) <= viewer.MAX_VIEW_ATOMS // 2
        else (1, 1, 1)
    )
    scene = viewer.build_viewer_scene(structure, [colouring], supercell=supercell, height=height, name=crystal.title)
    caption = ""
    if show_elements:
        scene, caption = with_symmetry_elements(scene, crystal, structure, settings.symprec, settings.angle_tolerance,
                                                supercell)  # fmt: skip
    viewer.render_viewer(scene, viewer.viewer_height(height), key="elements_view")
    if caption:
        st.caption(literal(caption))


# ---------------------------------------------------------------------------- comparing two crystals


def _compare_choices(edited: Edited, gallery: Sequence[Example]) -> list[str]:
    return [NO_CHANGE, *([ORIGINAL] if edited.changed else []), *(e.file for e in gallery)]


@panel("comparison")
def compare_view(edited: Edited, gallery: Sequence[Example], predictor: Predictor | None, symprec: float,
                 angle_tolerance: float) -> None:  # fmt: skip
    """Two crystals side by side: the one on the page and one picked here (the crystal before the changes,
    or a gallery crystal): predictions with their difference, symmetry, orbits and orbit x capsule routing
    on one colour scale."""
    st.header("Compare two crystals", anchor=False)
    choices = _compare_choices(edited, gallery)
    linked = st.session_state.pop("_teach_compare_link", None)
    if linked in choices:
        st.session_state["teach_compare"] = linked
    if st.session_state.get("teach_compare") not in choices:
        st.session_state["teach_compare"] = ORIGINAL if edited.changed else NO_CHANGE
    names = {e.file: e.name for e in gallery}
    pick = st.selectbox("Compare with", choices, key="teach_compare",
                        format_func=lambda c: {NO_CHANGE: "nothing", ORIGINAL: "the crystal before the changes"}.get(
                            c, names.get(c, c)))  # fmt: skip
    if pick == NO_CHANGE:
        return
    if pick == ORIGINAL:
        other, other_structure = edited.original, edited.original_structure
    else:
        example = next(e for e in gallery if e.file == pick)
        other = CrystalFile.from_path(example.path, origin="example", title=example.name, source=example.source)
        other_structure = read_crystal(other)
    sides = [(edited.crystal, edited.structure), (other, other_structure)]
    predictions = []
    for crystal, _ in sides:
        try:
            predictions.append(explain_crystal(crystal, predictor) if predictor is not None else None)
        except StructureError as exc:
            st.error(literal(f"No prediction for {crystal.title}: {exc}"))
            predictions.append(None)
    if predictor is not None and all(predictions):
        _prediction_table(sides, predictions, predictor)
    if pick == ORIGINAL and edited.comparison is not None:
        st.caption(literal(f"Before → after the changes: {edited.comparison.step}."))
    columns = st.columns(2)
    for side, ((crystal, structure), explanation), column in zip(("a", "b"), zip(sides, predictions, strict=True),
                                                                 columns, strict=True):  # fmt: skip
        with column:
            _one_side(side, crystal, structure, explanation, predictor, symprec, angle_tolerance)
    st.caption(
        "Both routing charts come from the same (first) network of the ensemble, so capsule k means the same "
        "learned pattern on both sides, and both use the 0-1 colour scale."
    )


def _prediction_table(sides, predictions, predictor: Predictor) -> None:
    rows = []
    for target in predictor.targets:
        a, b = (float(p[target]) for p in predictions)
        digits = 2 if target == "band_gap" else 3
        unit = UNITS.get(target, "")
        rows.append({
            "property": f"{TITLES.get(target, target)} ({unit})",
            sides[0][0].title: f"{a:.{digits}f}",
            sides[1][0].title: f"{b:.{digits}f}",
            "difference (right - left)": f"{b - a:+.{digits}f}",
        })  # fmt: skip
    st.table(rows, hide_index=True, border="horizontal")


def _one_side(key: str, crystal, structure, explanation, predictor, symprec: float, angle_tolerance: float) -> None:
    report = analyze_symmetry(structure, symprec, angle_tolerance)
    st.markdown(f"**{literal(crystal.title)}** · {literal(structure.composition.reduced_formula)}")
    st.markdown(f"{literal(report.space_group_symbol)} (No. {report.space_group_number}) · point group "
                f"{literal(report.point_group)} · {report.n_orbits} orbits")  # fmt: skip
    st.table(
        [{k: row[k] for k in ("orbit", "multiplicity", "site symmetry", "atoms")} for row in orbit_table(report)],
        hide_index=True,
        border="horizontal",
    )
    if explanation is not None and predictor is not None:
        data = routing_data(structure, explanation, predictor.targets)
        st.plotly_chart(charts.orbit_routing_heatmap(data, crystal.digest), config={"displaylogo": False},
                        key=f"teach_compare_{key}")  # fmt: skip


# ---------------------------------------------------------------------------- writing the link


def current_link(edited: Edited | None, gallery: Sequence[Example], settings) -> dict[str, str]:
    """The query parameters that reproduce what the page shows."""
    example = edited.original.name if edited is not None and edited.original.origin == "example" else None
    if example not in {e.file for e in gallery}:
        example = None
    state = LinkState(example=example)
    if edited is not None and not edited.error:
        e = edited.edits
        if e.displace:
            orbit, direction, amplitude = e.displace
            report = analyze_symmetry(edited.original_structure, settings.symprec, settings.angle_tolerance)
            label = str(orbit)
            if isinstance(orbit, int):  # the element when it has one orbit, else the orbit's label
                element = report.orbits[orbit].element
                alone = sum(o.element == element for o in report.orbits) == 1
                label = element if alone else report.orbits[orbit].label
            state.displace = (label, direction, amplitude)
        state.strain, state.rattle = e.strain, e.rattle
        state.substitute = e.substitute
    state.supercell = tuple(settings.supercell)
    state.colour = {v: k for k, v in COLOUR_NAMES.items()}.get(settings.colour_mode)
    compare = st.session_state.get("teach_compare")
    default = ORIGINAL if edited is not None and edited.changed else NO_CHANGE
    state.compare = None if compare in (None, NO_CHANGE, default) else compare
    state.elements = bool(st.session_state.get("teach_elements"))
    return link_params(state)


def write_link(edited: Edited | None, gallery: Sequence[Example], settings, where=None, extra=None) -> str:
    """Put the page state into the address bar (``st.query_params``) and show it as a link to share
    (default in the sidebar); returns the query string. ``extra``: more parameters of the page (such as
    ``crystal=mp-804``, a library crystal). Call it last."""
    params = {**(extra or {}), **current_link(edited, gallery, settings)}
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)
    query = "?" + urlencode(params, safe=":,") if params else ""
    where = where if where is not None else st.sidebar
    where.caption("Share this view: add this to the page's address")
    where.code(query or "?", language=None)
    return query
