"""Teaching symmetry: change a crystal a little and see which symmetry survives.

Every operation takes a pymatgen ``Structure`` and returns a *new* one (the input is never changed),
with the atoms in the same order, so atom ``i`` of the result is atom ``i`` of the input:

* :func:`displace_orbit`: move every atom of one Wyckoff orbit by the same vector (Ti in SrTiO3 along
  c: Pm-3m -> P4mm);
* :func:`strain_cell`: stretch the cell along a, b or c, or shear it (Si along c: Fd-3m -> I4_1/amd);
* :func:`rattle`: move every atom by a random vector (reproducible with a seed);
* :func:`substitute`: replace an element (or one orbit) by another, optionally scaling the cell by a
  bond-length rule from tabulated radii (NaCl, Na -> K: the cell of KCl).

:func:`compare_symmetry` tells what happened: the new space group, the group-subgroup step
``Pm-3m (221) -> P4mm (99), index 6``, which Wyckoff orbits split into what (``O 3c -> O 1b + O 2c``),
and a plain-language explanation. Amplitudes are bounded and every result is checked like an upload
(atoms closer than 0.5 Å are refused); substitutions to elements the model never saw in training are
refused. Every refusal is a one-line :class:`sen.StructureError`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import spglib
from pymatgen.core import Element, Lattice, Species, Structure

from sen.errors import StructureError
from sen.io import validate_structure
from sen.symmetry import (
    DEFAULT_ANGLE_TOLERANCE,
    DEFAULT_SYMPREC,
    POINT_GROUP_ORDERS,
    SymmetryReport,
    analyze_symmetry,
    unique_orbit_names,
)

MAX_DISPLACEMENT = 2.0  # Å: how far an orbit may be moved
MAX_STRAIN = 30.0  # %: uniaxial or shear strain
MAX_RATTLE = 0.5  # Å: largest random displacement of an atom
VOLUME_FACTOR_RANGE = (0.5, 2.0)  # a given cell-volume factor must lie in this range
MAX_SEED = 2**32 - 1

#: Strain modes: uniaxial along a lattice vector, or shear in the plane of two of them.
STRAIN_MODES = {
    "a": "uniaxial along a",
    "b": "uniaxial along b",
    "c": "uniaxial along c",
    "ab": "shear in the a-b plane",
    "bc": "shear in the b-c plane",
    "ca": "shear in the c-a plane",
}

_ARROW = "->"


# ---------------------------------------------------------------------------- checks


def _check_number(name: str, value: float, low: float, high: float, unit: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise StructureError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or not (low <= value <= high):
        raise StructureError(f"{name} must be between {low:g} and {high:g} {unit}, got {value:g}")
    return value


def _checked(structure: Structure, what: str) -> Structure:
    """The new structure, validated like an upload; the reason names the change that caused it."""
    try:
        checked = validate_structure(structure)  # a wrapped copy when sites lie outside the cell (else None)
    except StructureError as exc:
        raise StructureError(f"after {what}, {exc}; use a smaller amplitude") from None
    return checked if isinstance(checked, Structure) else structure


def _copy(structure: Structure) -> Structure:
    if not isinstance(structure, Structure):
        raise StructureError(f"expected a pymatgen Structure, got {type(structure).__name__}")
    if not structure.is_ordered:
        raise StructureError("this works on ordered structures only (no partial occupancies)")
    return Structure(structure.lattice, structure.species, structure.frac_coords)


def _direction_vector(structure: Structure, direction: Sequence[float], cartesian: bool) -> np.ndarray:
    """A unit Cartesian vector along ``direction`` ([u v w] along the lattice vectors, or Cartesian)."""
    try:
        d = np.asarray([float(x) for x in direction], dtype=float)
    except (TypeError, ValueError):
        raise StructureError(f"a direction needs three numbers, got {direction!r}") from None
    if d.shape != (3,) or not np.all(np.isfinite(d)):
        raise StructureError(f"a direction needs three finite numbers, got {direction!r}")
    vector = d if cartesian else d @ structure.lattice.matrix
    norm = float(np.linalg.norm(vector))
    if norm < 1e-9:
        raise StructureError("the direction is zero: give at least one non-zero component")
    return vector / norm


def check_element(symbol: str, allowed: Iterable[str] | None = None) -> str:
    """The element symbol, checked: a real element and, when ``allowed`` is given, one of those
    (the model's training elements: it has never seen the others)."""
    text = str(symbol).strip()
    try:
        element = Element(text[:1].upper() + text[1:].lower())
    except (ValueError, KeyError):
        raise StructureError(f"{text[:20]!r} is not a chemical element") from None
    if allowed is not None:
        allowed = {str(e) for e in allowed}
        if element.symbol not in allowed:
            raise StructureError(
                f"{element.symbol} never appeared in the model's training data, so its prediction would be a guess; "
                "choose another element"
            )
    return element.symbol


# ---------------------------------------------------------------------------- orbits


def resolve_orbit(report: SymmetryReport, selector: str | int) -> int:
    """The orbit index (as in ``report.orbit_index``) named by ``selector``.

    ``selector`` is an orbit index (``2`` or ``"2"``), an orbit label (``"O 3c"``, also ``"O3c"`` or
    ``"O_3c"``; the first orbit with that label) or an element symbol (``"Ti"``: that element's first orbit).
    """
    n = report.n_orbits
    if isinstance(selector, int | np.integer) or str(selector).strip().isdigit():
        k = int(selector)
        if not 0 <= k < n:
            raise StructureError(f"there is no orbit {k}: this crystal has orbits 0 to {n - 1}")
        return k
    text = re.sub(r"[\s_]+", "", str(selector))
    for orbit in report.orbits:
        if orbit.label.replace(" ", "").lower() == text.lower():
            return orbit.index
    for orbit in report.orbits:
        if orbit.element.lower() == text.lower():
            return orbit.index
    labels = ", ".join(o.label for o in report.orbits)
    raise StructureError(f"no orbit {str(selector)[:20]!r} in this crystal; its orbits are {labels}")


def displace_orbit(
    structure: Structure,
    orbit: int | str,
    direction: Sequence[float],
    amplitude: float,
    *,
    cartesian: bool = False,
    symprec: float = DEFAULT_SYMPREC,
) -> Structure:
    """Move every atom of one Wyckoff orbit by the same vector.

    Args:
        orbit: the orbit's index in ``analyze_symmetry(structure, symprec).orbit_index``, or a selector
            for :func:`resolve_orbit` (``"Ti"``, ``"O 3c"``).
        direction: ``[u, v, w]``, the direction u a + v b + w c (along the lattice vectors), or with
            ``cartesian`` a Cartesian vector; only its direction matters.
        amplitude: length of the displacement in Å (0 to ``MAX_DISPLACEMENT``; negative moves the other way
            if at least ``-MAX_DISPLACEMENT``).
    """
    amplitude = _check_number("the displacement", amplitude, -MAX_DISPLACEMENT, MAX_DISPLACEMENT, "Å")
    report = analyze_symmetry(_copy(structure), symprec)
    k = resolve_orbit(report, orbit)
    return _move_atoms(
        structure, report.orbits[k].atom_indices, direction, amplitude, cartesian, report.orbits[k].label
    )


def _move_atoms(structure, atoms, direction, amplitude: float, cartesian: bool, label: str) -> Structure:
    new = _copy(structure)
    shift = amplitude * _direction_vector(new, direction, cartesian)
    new.translate_sites(list(atoms), shift, frac_coords=False, to_unit_cell=True)
    return _checked(new, f"moving {label} by {abs(amplitude):.2f} Å")


def strain_cell(structure: Structure, mode: str, percent: float) -> Structure:
    """Strain the cell homogeneously (atoms keep their fractional coordinates).

    ``mode`` ``"a"``, ``"b"`` or ``"c"``: stretch (positive ``percent``) or compress along that lattice
    vector by ``percent`` % of its length. ``"ab"``, ``"bc"``, ``"ca"``: a symmetric shear of engineering
    strain ``percent`` % in the plane of those two vectors (for perpendicular vectors the angle between
    them changes by about ``percent``/100 radians). ``percent`` is at most ``MAX_STRAIN`` in size.
    """
    if mode not in STRAIN_MODES:
        raise StructureError(f"unknown strain {str(mode)[:10]!r}; use one of {', '.join(STRAIN_MODES)}")
    e = _check_number("the strain", percent, -MAX_STRAIN, MAX_STRAIN, "%") / 100.0
    new = _copy(structure)
    matrix = new.lattice.matrix
    unit = matrix / np.linalg.norm(matrix, axis=1)[:, None]
    axis = {"a": 0, "b": 1, "c": 2}
    if len(mode) == 1:
        u = unit[axis[mode]]
        deformation = np.eye(3) + e * np.outer(u, u)
    else:
        u = unit[axis[mode[0]]]
        v = unit[axis[mode[1]]] - np.dot(unit[axis[mode[1]]], u) * u
        v /= np.linalg.norm(v)
        deformation = np.eye(3) + (e / 2) * (np.outer(u, v) + np.outer(v, u))
    strained = Structure(Lattice(matrix @ deformation.T), new.species, new.frac_coords)
    return _checked(strained, f"straining the cell by {percent:g} %")


def rattle(structure: Structure, amplitude: float, seed: int = 0) -> Structure:
    """Move every atom by its own random vector, drawn uniformly from a ball of radius ``amplitude`` Å
    (at most ``MAX_RATTLE``). The same ``seed`` gives the same displacements."""
    amplitude = _check_number("the rattle amplitude", amplitude, 0.0, MAX_RATTLE, "Å")
    seed = int(_check_number("the seed", seed, 0, MAX_SEED, ""))
    new = _copy(structure)
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(len(new), 3))
    directions /= np.linalg.norm(directions, axis=1)[:, None]
    lengths = amplitude * rng.random(len(new)) ** (1 / 3)
    cart = new.cart_coords + directions * lengths[:, None]
    rattled = Structure(new.lattice, new.species, cart, coords_are_cartesian=True, to_unit_cell=True)
    return _checked(rattled, f"rattling the atoms by up to {amplitude:.2f} Å")


# ---------------------------------------------------------------------------- substitution


@dataclass(frozen=True)
class VolumeScaling:
    """How a substitution scales the cell: ``factor`` multiplies the volume."""

    factor: float
    radii: str  # "ionic (Shannon, oxidation state +1)", "metallic", "atomic", "given factor", "kept"
    old_radius: float | None = None  # Å
    new_radius: float | None = None  # Å

    @property
    def length_factor(self) -> float:
        """Factor on every lattice length (the cube root of ``factor``)."""
        return self.factor ** (1 / 3)

    def describe(self, old: str, new: str) -> str:
        """One line: what was scaled, and from which radii."""
        if self.radii == "kept":
            return "cell volume kept"
        if self.radii == "given factor":
            return f"cell volume × {self.factor:.3f} (given)"
        return (
            f"cell volume × {self.factor:.3f} (lengths × {self.length_factor:.3f}) from {self.radii} radii: "
            f"{old} {self.old_radius:.2f} Å -> {new} {self.new_radius:.2f} Å"
        )


def _radii(structure: Structure, old: str, new: str) -> tuple[str, dict[str, float], float, float]:
    """Radii for the bond-length rule: ionic when the oxidation states can be guessed, metallic for a
    metal (oxidation state 0), else atomic; returns (kind, radius of each element, old radius, new radius)."""
    elements = sorted({site.specie.symbol for site in structure})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            guesses = structure.composition.oxi_state_guesses(max_sites=-50)
        except Exception:  # pymatgen gives up on large or unusual compositions
            guesses = []
    states = guesses[0] if guesses else {}
    if states and all(states.get(e) for e in elements):
        oxi = states[old]
        try:
            radius = {e: float(Species(e, states[e]).ionic_radius) for e in elements}
            new_radius = float(Species(new, oxi).ionic_radius)
            return f"ionic (Shannon, oxidation state {oxi:+g})", radius, radius[old], new_radius
        except (TypeError, ValueError):
            pass  # a radius is not tabulated for this oxidation state
    if states and all(states.get(e) == 0 for e in elements):
        metallic = {e: Element(e).metallic_radius for e in [*elements, new]}
        if all(isinstance(r, int | float) and r > 0 for r in metallic.values()):
            return "metallic", {e: float(metallic[e]) for e in elements}, float(metallic[old]), float(metallic[new])
    atomic = {e: Element(e).atomic_radius for e in [*elements, new]}
    if not all(r is not None and float(r) > 0 for r in atomic.values()):
        raise StructureError(f"pymatgen has no radius for {old} or {new}; scale the volume by a factor instead")
    return "atomic", {e: float(atomic[e]) for e in elements}, float(atomic[old]), float(atomic[new])


def substitution_volume_factor(structure: Structure, old: str, new: str, atoms: Sequence[int]) -> VolumeScaling:
    """Volume factor for replacing ``old`` by ``new`` on ``atoms``, by a bond-length rule.

    Each nearest-neighbour bond i-j of a replaced atom (the neighbours within 15 % of the shortest bond)
    changes length by the change of the radii of its two ends, d' = d + (r'_i - r_i) + (r'_j - r_j);
    the cell's lengths are scaled by the mean of d'/d. Radii: Shannon ionic radii (pymatgen) when
    oxidation states can be guessed for the crystal and the new element has a radius in the same
    state, metallic radii for a metal, else atomic radii. For NaCl, Na -> K: lengths × 1.128 (ionic),
    a = 6.36 Å against 6.29 Å measured for KCl; a rule of thumb, not a relaxation.
    """
    kind, radius, r_old, r_new = _radii(structure, old, new)
    replaced = set(int(i) for i in atoms)
    ratios = []
    for i in replaced:
        neighbours = structure.get_neighbors(structure[i], 6.0)
        if not neighbours:
            continue
        shortest = min(n.nn_distance for n in neighbours)
        for n in neighbours:
            if n.nn_distance <= 1.15 * shortest:
                j = int(n.index)
                change = (r_new - r_old) + ((r_new - r_old) if j in replaced else 0.0)
                ratios.append((n.nn_distance + change) / n.nn_distance)
    length = float(np.mean(ratios)) if ratios else r_new / r_old
    factor = length**3
    low, high = VOLUME_FACTOR_RANGE
    if not low <= factor <= high:
        raise StructureError(
            f"the radii of {old} and {new} would scale the cell volume by {factor:.2f}, outside {low:g}-{high:g}; "
            "keep the volume or give a factor"
        )
    return VolumeScaling(factor, kind, r_old, r_new)


def substitute(
    structure: Structure,
    old: str,
    new: str,
    *,
    orbit: int | str | None = None,
    volume: str | float = "radii",
    allowed_elements: Iterable[str] | None = None,
    symprec: float = DEFAULT_SYMPREC,
) -> Structure:
    """Replace every atom of element ``old`` (or, with ``orbit``, of that orbit only) by element ``new``.

    ``volume``: ``"radii"`` scales the cell by :func:`substitution_volume_factor`, ``"keep"`` keeps it,
    a number multiplies the volume by it (within ``VOLUME_FACTOR_RANGE``). ``allowed_elements`` (the
    model's ``card["training_elements"]``) refuses elements the model never saw.
    """
    return substitute_with_scaling(structure, old, new, orbit=orbit, volume=volume,
                                   allowed_elements=allowed_elements, symprec=symprec)[0]  # fmt: skip


def substitute_with_scaling(
    structure: Structure,
    old: str,
    new: str,
    *,
    orbit: int | str | None = None,
    volume: str | float = "radii",
    allowed_elements: Iterable[str] | None = None,
    symprec: float = DEFAULT_SYMPREC,
) -> tuple[Structure, VolumeScaling]:
    """:func:`substitute`, also returning how the volume was scaled."""
    new_el = check_element(new, allowed_elements)
    old_el = check_element(old)
    base = _copy(structure)
    if orbit is not None:
        report = analyze_symmetry(base, symprec)
        k = resolve_orbit(report, orbit)
        atoms = list(report.orbits[k].atom_indices)
        old_el = report.orbits[k].element
    else:
        atoms = [i for i, site in enumerate(base) if site.specie.symbol == old_el]
    if not atoms:
        present = ", ".join(sorted({s.specie.symbol for s in base}))
        raise StructureError(f"there is no {old_el} in this crystal (it has {present})")
    if new_el == old_el:
        raise StructureError(f"replacing {old_el} by {new_el} changes nothing; choose another element")
    if volume == "radii":
        scaling = substitution_volume_factor(base, old_el, new_el, atoms)
    elif volume == "keep" or volume is None:
        scaling = VolumeScaling(1.0, "kept")
    else:
        low, high = VOLUME_FACTOR_RANGE
        scaling = VolumeScaling(_check_number("the volume factor", volume, low, high, ""), "given factor")
    species = [new_el if i in set(atoms) else site.specie.symbol for i, site in enumerate(base)]
    lattice = Lattice(base.lattice.matrix * scaling.length_factor)
    result = Structure(lattice, species, base.frac_coords)
    return _checked(result, f"replacing {old_el} by {new_el}"), scaling


# ---------------------------------------------------------------------------- several edits


@dataclass(frozen=True)
class Edits:
    """Changes to apply to a crystal, in this order: substitute, strain, displace, rattle.

    Orbits and elements are named as in the unchanged crystal (atoms keep their order throughout).
    """

    substitute: tuple[str, str, str | float] | None = None  # (element or orbit selector, new element, volume)
    strain: tuple[str, float] | None = None  # (mode, percent)
    displace: tuple[str | int, tuple[float, float, float], float] | None = None  # (orbit, [u v w], Å)
    rattle: tuple[float, int] | None = None  # (amplitude Å, seed)

    @property
    def empty(self) -> bool:
        """True when nothing is changed."""
        return not any((self.substitute, self.strain, self.displace, self.rattle))


@dataclass(frozen=True)
class EditResult:
    """The changed crystal and what was done, one phrase per step."""

    structure: Structure
    steps: tuple[str, ...] = ()
    volume: VolumeScaling | None = None


def _element_or_orbit(report: SymmetryReport, selector: str) -> tuple[str, int | None]:
    """``("Na", None)`` for an element present in the crystal, else ``(element, orbit index)``."""
    text = str(selector).strip()
    if any(o.element == text for o in report.orbits):
        return text, None
    k = resolve_orbit(report, text)
    return report.orbits[k].element, k


def apply_edits(
    structure: Structure,
    edits: Edits,
    allowed_elements: Iterable[str] | None = None,
    symprec: float = DEFAULT_SYMPREC,
) -> EditResult:
    """Apply ``edits`` to a copy of ``structure``; raises StructureError with the step's reason."""
    report = analyze_symmetry(structure, symprec)
    current, steps, scaling = _copy(structure), [], None
    if edits.substitute:
        selector, new, volume = edits.substitute
        old, orbit = _element_or_orbit(report, selector)
        current, scaling = substitute_with_scaling(current, old, new, orbit=orbit, volume=volume,
                                                   allowed_elements=allowed_elements, symprec=symprec)  # fmt: skip
        where = report.orbits[orbit].label if orbit is not None else f"every {old}"
        new_symbol = check_element(new)
        steps.append(f"{where} replaced by {new_symbol} ({scaling.describe(old, new_symbol)})")
    if edits.strain:
        mode, percent = edits.strain
        current = strain_cell(current, mode, percent)
        steps.append(f"cell strained {float(percent):+g} % ({STRAIN_MODES[mode]})")
    if edits.displace:
        selector, direction, amplitude = edits.displace
        k = resolve_orbit(report, selector)
        orbit = report.orbits[k]
        amplitude = _check_number("the displacement", amplitude, -MAX_DISPLACEMENT, MAX_DISPLACEMENT, "Å")
        current = _move_atoms(current, orbit.atom_indices, direction, amplitude, False, orbit.label)
        steps.append(f"{orbit.label} moved {float(amplitude):.3g} Å along [{format_direction(direction)}]")
    if edits.rattle:
        amplitude, seed = edits.rattle
        current = rattle(current, amplitude, seed)
        steps.append(f"atoms rattled by up to {float(amplitude):.3g} Å (seed {int(seed)})")
    return EditResult(current, tuple(steps), scaling)


def format_direction(direction: Sequence[float]) -> str:
    """``[0 0 1]``-style text for a direction (integers where they are integers)."""
    return " ".join(f"{float(x):g}" for x in direction)


# ---------------------------------------------------------------------------- comparing symmetry


@dataclass(frozen=True)
class OrbitSplit:
    """What became of one orbit of the original crystal."""

    before: str  # e.g. "O 3c"
    after: tuple[str, ...]  # e.g. ("O 1b", "O 2c")
    atoms: tuple[tuple[int, ...], ...]  # the atoms in each new orbit (indices of the new structure)

    @property
    def split(self) -> bool:
        """True when the orbit's atoms are no longer all equivalent."""
        return len(self.after) > 1

    def __str__(self) -> str:
        return f"{self.before} {_ARROW} {' + '.join(self.after)}"


@dataclass(frozen=True)
class SymmetryComparison:
    """The symmetry of a crystal before and after a change, and how the two groups are related."""

    before: SymmetryReport
    after: SymmetryReport
    point_group_index: float  # |P_G| / |P_H|
    translation_index: float  # primitive-cell volume of H / of G
    is_subgroup: bool | None  # every operation of H is one of G (None: not checked)
    splits: tuple[OrbitSplit, ...] = field(default_factory=tuple)
    note: str = ""

    @property
    def index(self) -> int | None:
        """|G| / |H| when H is a subgroup of G (an integer), else None."""
        value = self.point_group_index * self.translation_index
        if self.is_subgroup is False or value < 1 - 1e-6 or abs(value - round(value)) > 1e-6:
            return None
        return int(round(value))

    @property
    def relation(self) -> str:
        """``same``, ``t`` (translationengleiche: translations kept), ``k`` (klassengleiche: point group
        kept), ``general`` (both lost), or ``none`` (H is not a subgroup of G)."""
        if self.index is None:
            return "none"
        if self.index == 1:
            return "same"
        if round(self.translation_index) == 1:
            return "t"
        if round(self.point_group_index) == 1:
            return "k"
        return "general"

    @property
    def step(self) -> str:
        """``Pm-3m (221) -> P4mm (99), index 6``."""
        g, h = self.before, self.after
        text = (
            f"{g.space_group_symbol} ({g.space_group_number}) {_ARROW} {h.space_group_symbol} ({h.space_group_number})"
        )
        return f"{text}, index {self.index}" if self.index is not None else f"{text}, not a subgroup at this tolerance"

    @property
    def split_orbits(self) -> list[OrbitSplit]:
        """Only the orbits that split."""
        return [s for s in self.splits if s.split]

    def explanation(self, change: str = "The change", geometric: bool = True) -> str:
        """What the student sees, in plain language (``geometric``: the change moved atoms or the cell,
        so a hint about the tolerance is added when nothing broke)."""
        g, h = self.before, self.after
        tol = f"at spglib's tolerance of {h.symprec:g} Å"
        if self.relation == "same":
            return (
                f"{change} keeps the space group {g.space_group_symbol} (No. {g.space_group_number}) {tol}: every "
                "symmetry operation survives."
                + (
                    " A change smaller than the tolerance is invisible to spglib; make it larger, or lower the "
                    "tolerance, to see the symmetry break."
                    if geometric
                    else ""
                )
            )
        if self.relation == "none":
            more = h.n_operations / max(1, h.n_cells) > g.n_operations / max(1, g.n_cells)
            return (
                f"{change} gives {h.space_group_symbol} (No. {h.space_group_number}) {tol}, "
                + ("which is more symmetric than " if more else "which spglib does not find as a subgroup of ")
                + f"{g.space_group_symbol} (No. {g.space_group_number}). {self.note}".rstrip()
            )
        pg, ph = POINT_GROUP_ORDERS[g.point_group], POINT_GROUP_ORDERS[h.point_group]
        parts = [
            f"{change} lowers the symmetry from {g.space_group_symbol} (No. {g.space_group_number}) to "
            f"{h.space_group_symbol} (No. {h.space_group_number}) {tol}: a subgroup of index {self.index}, so "
            f"1 in {self.index} of the symmetry operations survives."
        ]
        if self.relation in ("t", "general"):
            parts.append(
                f"The point group drops from {g.point_group} ({pg} operations) to {h.point_group} ({ph})"
                + (": the lattice translations are all kept." if self.relation == "t" else ".")
            )
        if self.relation in ("k", "general"):
            parts.append(
                f"The primitive cell becomes {round(self.translation_index)} times larger: "
                "some lattice translations are lost"
                + (", while the point group stays." if self.relation == "k" else ".")
            )
        splits = self.split_orbits
        if splits:
            parts.append(
                "; ".join(str(s) for s in splits)
                + ": atoms that were copies of each other are no longer equivalent, so the network sees them as "
                "different sites."
            )
        else:
            parts.append("No orbit splits: each set of equivalent atoms stays together.")
        return " ".join(parts)


def _unique_labels(report: SymmetryReport) -> list[str]:
    return unique_orbit_names(report)


def _basis_change(before: Structure, after: Structure) -> np.ndarray | None:
    """Integer M with after's lattice ≈ M x before's (rows), allowing for strain; None if there is none."""
    m = after.lattice.matrix @ np.linalg.inv(before.lattice.matrix)
    rounded = np.round(m)
    if np.abs(m - rounded).max() > 0.35 or abs(round(np.linalg.det(rounded))) < 1:
        return None
    return rounded


def _atom_map(before: Structure, after: Structure, m: np.ndarray) -> np.ndarray:
    """For each atom of ``after``, the atom of ``before`` it came from (same order, or the nearest site)."""
    if len(before) == len(after):
        return np.arange(len(after))
    frac = np.asarray(after.frac_coords) @ m  # in before's basis
    diff = frac[:, None, :] - np.asarray(before.frac_coords)[None, :, :]
    diff -= np.round(diff)
    dist = np.linalg.norm(diff @ before.lattice.matrix, axis=2)
    return dist.argmin(1)


def _maps_onto_itself(structure: Structure, rotations, translations, tol: float) -> bool:
    frac = np.asarray(structure.frac_coords)
    numbers = np.asarray(structure.atomic_numbers)
    lattice = structure.lattice.matrix
    same = numbers[:, None] == numbers[None, :]
    for w, t in zip(rotations, translations, strict=True):
        image = frac @ w.T + t
        diff = image[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        dist = np.linalg.norm(diff @ lattice, axis=2)
        dist[~same] = np.inf
        if dist.min(1).max() > tol:
            return False
    return True


def _subgroup_check(before: Structure, after: Structure, m: np.ndarray | None, symprec: float, angle: float):
    """Whether every operation spglib finds for ``after`` maps ``before`` onto itself (H a subgroup of G)."""
    if m is None:
        return None, "The two cells are not related by an integer change of basis, so the groups were not compared."
    if len(before) ** 2 * 192 > 5e7:
        return None, "The cells are too large to compare the operations one by one."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = spglib.get_symmetry_dataset(
            (after.lattice.matrix, after.frac_coords, after.atomic_numbers), symprec=symprec, angle_tolerance=angle
        )
    if ds is None:
        return None, ""
    mt, mt_inv = m.T, np.linalg.inv(m.T)
    rotations = [np.round(mt @ w @ mt_inv) for w in ds.rotations]
    translations = [mt @ t for t in ds.translations]
    mapping = _atom_map(before, after, m)
    moved = (np.asarray(after.frac_coords) @ m) - np.asarray(before.frac_coords)[mapping]
    moved -= np.round(moved)
    tol = 3 * symprec + 1e-3
    for shift in (np.zeros(3), moved.mean(0)):  # the same origin, or the one the whole crystal moved to
        shifted = [t + (np.eye(3) - w) @ shift for w, t in zip(rotations, translations, strict=True)]
        if _maps_onto_itself(before, rotations, shifted, tol):
            return True, ""
    return False, (
        "Some operations spglib finds for the new structure are not operations of the old one at this tolerance, "
        "so the new group is not found as a subgroup of the old (the index is then not defined)."
    )


def compare_symmetry(
    before: Structure,
    after: Structure,
    symprec: float = DEFAULT_SYMPREC,
    angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE,
) -> SymmetryComparison:
    """The symmetry of ``before`` and ``after`` (a changed copy of it) and how it changed.

    The index |G : H| is (order of G's point group / order of H's) x (primitive-cell volume of H /
    primitive-cell volume of G); the second factor is computed from the atoms per primitive cell
    (the changes here keep the atoms per volume), so it is exact under strain. ``is_subgroup`` says
    whether every operation spglib finds for ``after`` is one of ``before`` (within 3 x symprec, for
    the same origin or for one moved with the whole crystal); when it is not, ``index`` is None and
    ``note`` says so. Orbit splits map the atoms of each original orbit to their new orbits (atom i of
    ``after`` is atom i of ``before``; for a supercell, the nearest original site).
    """
    g = analyze_symmetry(before, symprec, angle_tolerance)
    h = analyze_symmetry(after, symprec, angle_tolerance)
    pg_index = POINT_GROUP_ORDERS[g.point_group] / POINT_GROUP_ORDERS[h.point_group]
    t_index = h.n_primitive_atoms / g.n_primitive_atoms if g.n_primitive_atoms and h.n_primitive_atoms else 1.0
    m = _basis_change(before, after)
    is_sub, note = _subgroup_check(before, after, m, symprec, angle_tolerance)
    if pg_index * t_index < 1 - 1e-6:
        is_sub, note = False, "The new structure has more symmetry operations per lattice point than the old one."
    splits = []
    if m is not None:
        mapping = _atom_map(before, after, m)
        names = _unique_labels(h)
        before_names = _unique_labels(g)
        for k, orbit in enumerate(g.orbits):
            members = np.flatnonzero(np.isin(mapping, orbit.atom_indices))
            new_orbits = sorted(set(int(h.orbit_index[i]) for i in members),
                                key=lambda j: (h.orbits[j].wyckoff_letter, h.orbits[j].multiplicity, j))  # fmt: skip
            splits.append(
                OrbitSplit(
                    before_names[k],
                    tuple(names[j] for j in new_orbits),
                    tuple(tuple(int(i) for i in members if h.orbit_index[i] == j) for j in new_orbits),
                )
            )
    return SymmetryComparison(g, h, pg_index, t_index, is_sub, tuple(splits), note)
