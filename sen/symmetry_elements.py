"""Symmetry elements (axes, planes, centres) from spglib's symmetry operations.

Every operation (W, w) of a space group, written in the basis of a cell (x -> W x + w in fractional
coordinates), leaves a geometric *element* fixed: a rotation or screw axis, a mirror or glide plane,
an inversion centre or a rotoinversion axis with its inversion point. This module finds them, as in
the symmetry-element diagrams of International Tables Vol. A:

* :func:`symmetry_elements` in spglib's conventional standard cell (for centrosymmetric groups with
  two origin choices, such as Fd-3m, origin choice 2: the origin on an inversion centre);
* :func:`cell_symmetry_elements` in the cell as given (what the 3D view draws).

The geometry follows the standard decomposition: for an operation of order n the intrinsic
(screw or glide) translation is g = (1/n) sum_k W^k w, and the element is the set of points x with
(W - I) x + (w - g) = 0. Each element is reported once per cell (equivalent elements, i.e. those
related by a lattice translation of the cell, are merged), with the pieces of it that lie inside the
cell (faces included) for drawing.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import spglib
from pymatgen.core import Structure

from sen.errors import StructureError
from sen.symmetry import DEFAULT_ANGLE_TOLERANCE, DEFAULT_SYMPREC

_TOL = 1e-4  # fractional: positions and translations closer than this are the same
_DIGITS = 6  # rounding of stored coordinates (class keys use 3 decimals)
_PROPER_ORDER = {3: 1, 2: 6, 1: 4, 0: 3, -1: 2}  # trace -> order, det +1
_IMPROPER_ORDER = {-3: 1, -2: 6, -1: 4, 0: 3, 1: 2}  # trace -> n of -n, det -1 (-2 = mirror, -1 = inversion)

Vector = tuple[float, float, float]


@dataclass(frozen=True)
class SymmetryAxis:
    """A rotation, screw or rotoinversion axis.

    ``order`` n and ``screw`` p make the symbol n_p (4_2: order 4, screw 2; p/n of the lattice period
    along the axis per turn of 360/n degrees, counter-clockwise looking down ``direction``);
    a rotoinversion axis -n has ``rotoinversion`` True and ``point`` its inversion point.
    """

    order: int
    screw: int
    rotoinversion: bool
    direction: tuple[int, int, int]  # [u v w] in the cell's lattice basis, smallest integers
    point: Vector  # a point on the axis (fractional)

    @property
    def symbol(self) -> str:
        """Hermann-Mauguin symbol: ``4``, ``6_3``, ``-4``."""
        if self.rotoinversion:
            return f"-{self.order}"
        return f"{self.order}_{self.screw}" if self.screw else str(self.order)


@dataclass(frozen=True)
class SymmetryPlane:
    """A mirror (``symbol`` m) or glide plane (a, b, c, n, d or g for any other glide vector)."""

    normal: tuple[int, int, int]  # (h k l): the plane is h x + k y + l z = offset (fractional)
    offset: float
    glide: Vector  # glide vector (fractional); zero for a mirror
    symbol: str

    @property
    def is_mirror(self) -> bool:
        """True for a mirror plane (no glide)."""
        return self.symbol == "m"


@dataclass(frozen=True)
class InversionCentre:
    """A centre of inversion, with its copies on the cell's faces, edges and corners."""

    point: Vector  # fractional, in [0, 1)


@dataclass(frozen=True)
class SymmetryElements:
    """The symmetry elements of a crystal in one cell (once per cell; ``lattice`` rows are a, b, c in Å)."""

    space_group_symbol: str
    space_group_number: int
    hall_number: int
    cell: str  # which cell the fractional coordinates refer to, in words
    lattice: np.ndarray
    axes: tuple[SymmetryAxis, ...]
    planes: tuple[SymmetryPlane, ...]
    centres: tuple[InversionCentre, ...]

    def axes_along(self, direction, symbol: str | None = None) -> list[SymmetryAxis]:
        """The axes parallel to ``direction`` ([u v w], either sense), optionally only those with ``symbol``."""
        target = _primitive_integer(np.asarray(direction, dtype=float))
        return [a for a in self.axes if a.direction == target and (symbol is None or a.symbol == symbol)]

    def planes_normal_to(self, normal, symbol: str | None = None) -> list[SymmetryPlane]:
        """The planes with normal (h k l) (either sense), optionally only those with ``symbol``."""
        target = _primitive_integer(np.asarray(normal, dtype=float))
        return [p for p in self.planes if p.normal == target and (symbol is None or p.symbol == symbol)]

    def counts(self) -> dict[str, int]:
        """Number of elements of each symbol in the cell (``{"4": 6, "m": 9, "-1": 8, ...}``)."""
        out: dict[str, int] = {}
        for name in [a.symbol for a in self.axes] + [p.symbol for p in self.planes] + ["-1"] * len(self.centres):
            out[name] = out.get(name, 0) + 1
        return out

    def summary(self) -> str:
        """One line per kind of element, e.g. ``4 along [0 0 1]: 2``."""
        lines = [f"Symmetry elements of {self.space_group_symbol} (No. {self.space_group_number}) in the {self.cell}:"]
        groups: dict[str, int] = {}
        for a in self.axes:
            key = f"{a.symbol} axes along [{' '.join(map(str, a.direction))}]"
            groups[key] = groups.get(key, 0) + 1
        for p in self.planes:
            kind = "mirror" if p.is_mirror else f"{p.symbol}-glide"
            key = f"{kind} planes ({' '.join(map(str, p.normal))})"
            groups[key] = groups.get(key, 0) + 1
        lines += [f"  {k}: {v}" for k, v in groups.items()]
        lines.append(f"  inversion centres: {len(self.centres)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- entry points


def _dataset(cell, symprec: float, angle_tolerance: float, hall_number: int = 0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = spglib.get_symmetry_dataset(
            cell, symprec=symprec, angle_tolerance=angle_tolerance, hall_number=hall_number
        )
    if ds is None:
        raise StructureError(
            f"spglib could not analyse this cell at tolerance {symprec:g} Å; try a different tolerance"
        )
    return ds


def _check(structure: Structure, symprec: float) -> tuple:
    if not isinstance(structure, Structure) or not structure.is_ordered:
        raise StructureError("symmetry elements need an ordered crystal structure")
    if not (0 < symprec <= 1.0):
        raise StructureError(f"symmetry tolerance must be between 0 and 1 Å, got {symprec}")
    return (structure.lattice.matrix, structure.frac_coords, list(structure.atomic_numbers))


def symmetry_elements(
    structure: Structure,
    symprec: float = DEFAULT_SYMPREC,
    angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE,
    origin_choice: int = 2,
) -> SymmetryElements:
    """Symmetry elements in spglib's conventional standard cell of ``structure``.

    For the 24 space groups with two origin choices, ``origin_choice=2`` (the default) puts the origin
    on an inversion centre, as International Tables' second setting (spglib's own default is choice 1).

    Raises:
        StructureError: spglib cannot analyse the cell at this tolerance.
    """
    cell = _check(structure, symprec)
    ds = _dataset(cell, symprec, angle_tolerance)
    hall = int(ds.hall_number)
    if origin_choice == 2 and spglib.get_spacegroup_type(hall).choice == "1":
        other = spglib.get_spacegroup_type(hall + 1)
        if other.number == ds.number and other.choice == "2":
            hall += 1
            ds = _dataset(cell, symprec, angle_tolerance, hall)
    std = (ds.std_lattice, ds.std_positions, ds.std_types)
    std_ds = _dataset(std, symprec, angle_tolerance, hall)
    choice = spglib.get_spacegroup_type(hall).choice
    setting = "conventional standard cell" + (f", origin choice {choice}" if choice in ("1", "2") else "")
    return elements_from_operations(
        std_ds.rotations,
        std_ds.translations,
        np.asarray(ds.std_lattice),
        ds.international,
        int(ds.number),
        hall,
        setting,
    )


def cell_symmetry_elements(
    structure: Structure, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE
) -> SymmetryElements:
    """Symmetry elements in the cell of ``structure`` as given (its lattice and origin): what the
    3D view draws. Only operations that map this cell's lattice onto itself are seen (as in
    :func:`sen.symmetry.analyze_symmetry`)."""
    cell = _check(structure, symprec)
    ds = _dataset(cell, symprec, angle_tolerance)
    return elements_from_operations(
        ds.rotations, ds.translations, np.asarray(structure.lattice.matrix), ds.international, int(ds.number),
        int(ds.hall_number), "cell as given",
    )  # fmt: skip


# ---------------------------------------------------------------------------- geometry of one operation


def _primitive_integer(v: np.ndarray) -> tuple[int, int, int]:
    """The smallest integer vector parallel to ``v`` (first non-zero component positive)."""
    v = np.asarray(v, dtype=float)
    v = v / np.abs(v).max()
    for m in range(1, 13):
        scaled = v * m
        if np.allclose(scaled, np.round(scaled), atol=1e-3):
            ints = np.round(scaled).astype(int)
            g = math.gcd(*(abs(int(i)) for i in ints))
            ints = ints // max(g, 1)
            if ints[np.flatnonzero(ints)[0]] < 0:
                ints = -ints
            return tuple(int(i) for i in ints)
    raise ValueError(f"not a lattice direction: {v}")


def _null_vector(m: np.ndarray) -> np.ndarray:
    """A unit vector spanning the (one-dimensional) null space of ``m``."""
    return np.linalg.svd(m)[2][-1]


def _sense(w_matrix: np.ndarray, u: np.ndarray, lattice: np.ndarray) -> float:
    """Sign of the rotation angle of the proper rotation ``w_matrix`` about ``u`` (fractional, Cartesian rule)."""
    to_cart = lattice.T  # column vectors: cart = L^T frac
    r = to_cart @ w_matrix @ np.linalg.inv(to_cart)
    axis = to_cart @ u
    axis = axis / np.linalg.norm(axis)
    trial = np.cross(axis, [1.0, 0.0, 0.0])
    if np.linalg.norm(trial) < 0.1:
        trial = np.cross(axis, [0.0, 1.0, 0.0])
    return float(np.dot(axis, np.cross(trial, r @ trial)))


def _period_along(u: np.ndarray, centrings: list[np.ndarray]) -> float:
    """Shortest lattice translation along ``u`` (integer vector), in units of ``u``, counting centrings."""
    period = 1.0
    k = int(np.argmax(np.abs(u)))
    for c in centrings:
        for n in range(-3, 4):
            alpha = (c[k] + n) / u[k]
            if _TOL < alpha < period - _TOL and np.allclose(c - alpha * u, np.round(c - alpha * u), atol=_TOL):
                period = alpha
    return period


def _glide_symbol(g: np.ndarray) -> str:
    """The letter of a glide vector (fractional, components in (-1/2, 1/2])."""
    nonzero = [i for i in range(3) if abs(g[i]) > _TOL]
    if not nonzero:
        return "m"
    half = all(abs(abs(g[i]) - 0.5) < _TOL for i in nonzero)
    if len(nonzero) == 1 and half:
        return "abc"[nonzero[0]]
    if len(nonzero) >= 2 and half:
        return "n"
    if len(nonzero) >= 2 and all(abs(abs(g[i]) - 0.25) < _TOL for i in nonzero):
        return "d"
    return "g"


def _centred(v: np.ndarray) -> np.ndarray:
    """Components reduced to (-1/2, 1/2]."""
    r = v - np.round(v)
    r[np.abs(r + 0.5) < _TOL] = 0.5
    r[np.abs(r) < _TOL] = 0.0
    return r


def _key(v) -> tuple[float, ...]:
    values = v.tolist() if isinstance(v, np.ndarray) else v
    return tuple(round(float(x), _DIGITS) + 0.0 for x in values)


def _line_key(point: np.ndarray, u: np.ndarray) -> tuple:
    """Canonical key of the line point + lambda u modulo lattice translations (integer shifts)."""
    k = int(np.argmax(np.abs(u)))
    base = point - (point[k] / u[k]) * u
    options = []
    for m in range(abs(int(u[k]))):
        options.append(_point_key(np.delete(base - (m / u[k]) * u, k)))
    return min(options)


def _point_key(point: np.ndarray) -> tuple:
    """A point modulo lattice translations, in [0, 1), to 3 decimals (rounded before the modulo)."""
    p = np.round(np.mod(np.round(np.asarray(point, dtype=float), 3), 1.0), 3)
    p[p >= 1.0] = 0.0
    return tuple((p + 0.0).tolist())


def _shifts(low: int, high: int) -> np.ndarray:
    return np.array(list(itertools.product(range(low, high + 1), repeat=3)), dtype=float)


@functools.lru_cache(maxsize=256)
def _plane_basis(h: tuple[int, ...]) -> np.ndarray:
    """Two integer vectors spanning the lattice vectors that lie in planes (h k l) (their cross product is ±h)."""
    hv = np.array(h, dtype=int)
    candidates = sorted((n for n in _shifts(-2, 2).astype(int) if n.any() and np.dot(hv, n) == 0),
                        key=lambda n: (int(np.dot(n, n)), tuple(-n)))  # fmt: skip
    e1 = candidates[0]
    for e2 in candidates[1:]:
        cross = np.cross(e1, e2)
        if np.array_equal(cross, hv) or np.array_equal(cross, -hv):
            return np.array([e1, e2], dtype=float)
    raise ValueError(f"no lattice basis found in the plane ({h})")


def _canonical_glide(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The glide vector modulo the lattice translations that lie in the plane (shortest, then largest)."""
    basis = _plane_basis(tuple(int(x) for x in h))
    coefficients, *_ = np.linalg.lstsq(basis.T, g, rcond=None)
    reduced = g - np.round(coefficients) @ basis
    options = [reduced - np.array(ij) @ basis for ij in itertools.product((-1, 0, 1), repeat=2)]
    return max(options, key=lambda v: (-round(float(np.dot(v, v)), _DIGITS), _key(v)))


def elements_from_operations(
    rotations,
    translations,
    lattice: np.ndarray,
    symbol: str = "",
    number: int = 0,
    hall_number: int = 0,
    cell: str = "cell",
    exhaustive: bool = False,
) -> SymmetryElements:
    """The symmetry elements of the operations (W, w) (fractional, in the basis of ``lattice``'s rows),
    once per cell, with the pieces inside the cell for drawing.

    Each operation is combined with the lattice translations {0, 1}^3, which reaches every element
    class of the crystallographic operations in standard settings; ``exhaustive`` uses {-1, 0, 1}^3
    (three times slower; the tests check that both find the same elements).
    """
    lattice = np.asarray(lattice, dtype=float)
    rotations = np.asarray(rotations, dtype=int)
    translations = np.asarray(translations, dtype=float)
    identity = np.eye(3, dtype=int)
    centrings = [_centred(t) for w, t in zip(rotations, translations, strict=True) if np.array_equal(w, identity)]
    centrings = [c for c in centrings if np.abs(c).max() > _TOL]
    shifts = _shifts(-1, 1) if exhaustive else _shifts(0, 1)
    axes: dict[tuple, SymmetryAxis] = {}
    planes: dict[tuple, SymmetryPlane] = {}
    centres: dict[tuple, np.ndarray] = {}
    for w_matrix, t in zip(rotations, translations, strict=True):
        det = round(float(np.linalg.det(w_matrix)))
        trace = int(np.trace(w_matrix))
        ws = t[None, :] + shifts  # the same operation combined with lattice translations
        if det == 1:
            n = _PROPER_ORDER[trace]
            if n == 1:
                continue
            _proper_axes(w_matrix, n, ws, lattice, centrings, axes)
        else:
            n = _IMPROPER_ORDER[trace]
            if n == 1:  # inversion: the centre is w/2
                for w in ws:
                    centres.setdefault(_point_key(w / 2), np.mod(w / 2, 1.0))
            elif n == 2:
                _planes(w_matrix, ws, planes)
            else:
                _rotoinversion_axes(w_matrix, n, ws, lattice, axes)
    axis_list = _drop_contained(list(axes.values()))
    plane_list = list(planes.values())
    centre_list = [InversionCentre(_point_key(p)) for p in centres.values()]
    axis_list.sort(key=lambda a: (-a.order, a.rotoinversion, a.screw, a.direction, a.point))
    plane_list.sort(key=lambda p: (p.normal, p.symbol != "m", p.symbol, p.offset))
    centre_list.sort(key=lambda c: c.point)
    return SymmetryElements(symbol, number, hall_number, cell, lattice, tuple(axis_list), tuple(plane_list),
                            tuple(centre_list))  # fmt: skip


def _proper_axes(w_matrix, n, ws, lattice, centrings, axes) -> None:
    eye = np.eye(3)
    u = np.array(_primitive_integer(_null_vector(w_matrix - eye)), dtype=float)
    if n > 2 and _sense(w_matrix, u, lattice) <= 0:
        return  # only the counter-clockwise 360/n rotation names the axis (its inverse gives n_(n-p))
    powers = sum(np.linalg.matrix_power(w_matrix, k) for k in range(n)) / n
    period = _period_along(u, centrings)
    solve = np.linalg.pinv(eye - w_matrix)
    g = ws @ powers.T  # intrinsic (screw) translations, parallel to u
    fractions = ((g @ u) / np.dot(u, u) / period) % 1.0
    points = (ws - g) @ solve.T
    for fraction, point in zip(fractions, points, strict=True):
        p = round(fraction * n) % n
        if abs(fraction * n - round(fraction * n)) > 1e-3:
            continue  # not a crystallographic screw (numerical noise): ignore
        key = ("axis", n, p, False, tuple(u), _line_key(point, u))
        if key not in axes:
            axes[key] = SymmetryAxis(n, p, False, _primitive_integer(u), _key(np.mod(point, 1.0)))


def _rotoinversion_axes(w_matrix, n, ws, lattice, axes) -> None:
    eye = np.eye(3)
    u = np.array(_primitive_integer(_null_vector(w_matrix + eye)), dtype=float)
    if _sense(-w_matrix, u, lattice) <= 0:
        return
    solve = np.linalg.inv(eye - w_matrix)
    for w in ws:
        point = solve @ w
        key = ("roto", n, tuple(u), _point_key(point))
        if key not in axes:
            axes[key] = SymmetryAxis(n, 0, True, _primitive_integer(u), _key(np.mod(point, 1.0)))


def _planes(w_matrix, ws, planes) -> None:
    eye = np.eye(3)
    h = np.array(_primitive_integer(_null_vector(w_matrix.T + eye)), dtype=float)
    solve = np.linalg.pinv(eye - w_matrix)
    for w in ws:
        intrinsic = (w_matrix @ w + w) / 2
        point = solve @ (w - intrinsic)  # before reducing: the reduction adds lattice vectors along the plane
        g = _canonical_glide(intrinsic, h)
        offset = float(np.dot(h, point)) % 1.0
        offset = 0.0 if abs(offset - 1.0) < _TOL else offset
        key = ("plane", tuple(h), round(offset, _DIGITS), _key(g))
        if key not in planes:
            planes[key] = SymmetryPlane(
                tuple(int(x) for x in h), round(offset, _DIGITS) + 0.0, _key(g), _glide_symbol(g)
            )


def _drop_contained(axes: list[SymmetryAxis]) -> list[SymmetryAxis]:
    """Remove proper axes that lie on a proper axis of a higher order that contains them (2 on a 4-fold line)."""
    by_line: dict[tuple, list[SymmetryAxis]] = {}
    for a in axes:
        if not a.rotoinversion:
            by_line.setdefault((a.direction, _line_key(np.array(a.point), np.array(a.direction, float))), []).append(a)
    kept = []
    for a in axes:
        if not a.rotoinversion:
            line = by_line[(a.direction, _line_key(np.array(a.point), np.array(a.direction, float)))]
            if any(b.order > a.order and b.order % a.order == 0 for b in line):
                continue
        kept.append(a)
    return kept


# ---------------------------------------------------------------------------- pieces inside the cell


def _clip_lines(points: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Pieces of the lines ``points[i] + lambda u`` inside the unit cell: an (m, 2, 3) array (positive length only)."""
    lo = np.full(len(points), -np.inf)
    hi = np.full(len(points), np.inf)
    inside = np.ones(len(points), dtype=bool)
    for i in range(3):
        if abs(u[i]) < 1e-12:
            inside &= (points[:, i] > -_TOL) & (points[:, i] < 1 + _TOL)
            continue
        a, b = -points[:, i] / u[i], (1 - points[:, i]) / u[i]
        lo, hi = np.maximum(lo, np.minimum(a, b)), np.minimum(hi, np.maximum(a, b))
    keep = inside & (hi - lo > 1e-6)
    starts = np.clip(points[keep] + lo[keep, None] * u, 0, 1)
    ends = np.clip(points[keep] + hi[keep, None] * u, 0, 1)
    return np.stack([starts, ends], axis=1)


def axis_segments(axis: SymmetryAxis) -> list[tuple[Vector, Vector]]:
    """The pieces of ``axis`` and of its lattice translates inside the cell (fractional end points; faces
    included): what a drawing of the cell shows. A rotoinversion axis gives the piece through its point."""
    u = np.array(axis.direction, dtype=float)
    p0 = np.array(axis.point)
    p0 = p0 - np.floor(p0 + _TOL)
    seen, segments = set(), []
    for start, end in _clip_lines(p0 + _shifts(-2, 2), u):
        key = tuple(sorted((_key(start), _key(end))))
        if key not in seen:
            seen.add(key)
            segments.append((_key(start), _key(end)))
    if axis.rotoinversion:  # a rotoinversion is drawn as its axis through the inversion point, if inside
        segments = [s for s in segments if _on_segment(p0, s)] or segments[:1]
    return sorted(segments)


def _on_segment(p: np.ndarray, segment) -> bool:
    a, b = np.array(segment[0]), np.array(segment[1])
    t = np.dot(p - a, b - a) / max(np.dot(b - a, b - a), 1e-12)
    return -_TOL <= t <= 1 + _TOL and np.allclose(a + t * (b - a), p, atol=1e-3)


_CORNERS = np.array(list(itertools.product((0.0, 1.0), repeat=3)))
_EDGES = [(i, j) for i, j in itertools.combinations(range(8), 2) if np.abs(_CORNERS[i] - _CORNERS[j]).sum() == 1]


def _plane_polygon(h: np.ndarray, d: float) -> tuple[Vector, ...] | None:
    points = []
    for i, j in _EDGES:
        a, b = _CORNERS[i], _CORNERS[j]
        fa, fb = np.dot(h, a) - d, np.dot(h, b) - d
        if abs(fa) < _TOL:
            points.append(a)
        if abs(fb) < _TOL:
            points.append(b)
        if fa * fb < 0 and abs(fa) > _TOL and abs(fb) > _TOL:
            points.append(a + (b - a) * fa / (fa - fb))
    unique = {_key(p): p for p in points}
    if len(unique) < 3:
        return None
    pts = np.array(list(unique.values()))
    centre = pts.mean(0)
    e1 = pts[0] - centre
    e2 = np.cross(h, e1)
    angles = np.arctan2((pts - centre) @ e2, (pts - centre) @ e1)
    ordered = pts[np.argsort(angles)]
    return tuple(_key(p) for p in ordered)


def plane_polygons(plane: SymmetryPlane) -> list[tuple[Vector, ...]]:
    """The polygons in which ``plane`` and its lattice translates cut the cell (fractional corners, in order)."""
    h = np.array(plane.normal, dtype=float)
    values = _CORNERS @ h
    polygons = []
    for k in range(int(np.floor(values.min() - plane.offset)) - 1, int(np.ceil(values.max() - plane.offset)) + 2):
        polygon = _plane_polygon(h, plane.offset + k)
        if polygon is not None:
            polygons.append(polygon)
    return polygons


def centre_copies(centre: InversionCentre) -> list[Vector]:
    """The centre and its copies on the cell's faces, edges and corners (fractional)."""
    p = np.mod(np.array(centre.point), 1.0)
    p[np.abs(p - 1.0) < _TOL] = 0.0
    options = [[x, x + 1.0] if x < _TOL else [x] for x in p]
    return [_key(c) for c in itertools.product(*options)]
