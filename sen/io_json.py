"""A strict reader for pymatgen Structure JSON that never decodes Python objects.

``Structure.from_dict`` hands every nested dict to monty's ``MontyDecoder``, which imports
whatever module a ``"@module"`` key names and calls whatever ``"@callable"`` names; an
uploaded file must never do that. This reader takes only what a crystal is made of:

* the lattice: ``matrix`` (3 x 3 Å), or ``a, b, c`` (Å) and ``alpha, beta, gamma`` (degrees),
  and optionally ``pbc``;
* each site's species (element symbols, optional oxidation state, occupancy 1),
  coordinates (``abc`` fractional, or ``xyz`` in Å), label, and plain-valued properties
  (numbers, strings, booleans, null, and lists of those).

``@module`` / ``@class`` keys are read as text and never imported; a file that asks for a
non-pymatgen class or for a ``@callable`` anywhere is refused.
"""

from __future__ import annotations

import json
import math
import warnings

from sen.errors import StructureError

#: Deepest nesting accepted anywhere in the document (a pymatgen Structure needs 5).
MAX_DEPTH = 32
#: Deepest nesting of lists inside one site property value.
MAX_PROPERTY_DEPTH = 4
_PLAIN = (str, int, float, bool, type(None))


def parse_structure_json(text: str, *, max_atoms: int):
    """Build a pymatgen ``Structure`` from pymatgen JSON text without decoding any Python object.

    Args:
        text: the file's text: a Structure dict, or a record with a ``"structure"`` key.
        max_atoms: refuse more sites than this before building anything.

    Returns:
        The Structure, as ``Structure.from_dict`` would build it for a plain, ordered file.

    Raises:
        StructureError: for invalid JSON, anything that asks to load code, and anything
            that is not an ordered, periodic crystal with real elements.
    """
    try:
        obj = json.loads(text, parse_constant=_non_finite)
    except json.JSONDecodeError as exc:
        raise StructureError(f"could not read this file as JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise StructureError("could not read this file as JSON: it is nested too deeply") from None
    except ValueError:  # e.g. an integer with more than 4300 digits
        raise StructureError("could not read this file as JSON: it contains a number too long to read") from None
    _check_tree(obj, keys=False)
    if isinstance(obj, dict) and isinstance(obj.get("structure"), dict):
        obj = obj["structure"]  # e.g. a ComputedStructureEntry-like record (the rest is never read)
    _check_tree(obj, keys=True)
    if not isinstance(obj, dict) or "sites" not in obj:
        raise StructureError("this JSON is not a pymatgen Structure (expected keys 'lattice' and 'sites')")
    if "lattice" not in obj:
        raise StructureError("this JSON has no lattice, so it describes a molecule, not a crystal")
    sites = obj["sites"]
    if not isinstance(sites, list):
        raise StructureError("this JSON's 'sites' is not a list of sites")
    if len(sites) > max_atoms:
        raise StructureError(
            f"structure has {len(sites)} atoms per cell, over the limit of {max_atoms}; use the primitive cell"
        )
    lattice = _lattice(obj["lattice"])
    species, coords, labels, properties, cartesian = [], [], [], {}, None
    for i, site in enumerate(sites):
        if not isinstance(site, dict):
            raise StructureError(f"site {i} of this JSON is not an object with 'species' and 'abc'")
        species.append(_species(site.get("species"), i, site.get("label")))
        if "abc" in site:
            coords.append(_vector(site["abc"], f"the 'abc' coordinates of site {i}"))
            is_cart = False
        elif "xyz" in site:
            coords.append(_vector(site["xyz"], f"the 'xyz' coordinates of site {i}"))
            is_cart = True
        else:
            raise StructureError(f"site {i} of this JSON has no coordinates ('abc' or 'xyz')")
        if not all(math.isfinite(x) for x in coords[-1]):
            raise StructureError("atom coordinates contain NaN or infinite numbers")
        if cartesian is not None and cartesian != is_cart:
            raise StructureError("this JSON mixes 'abc' and 'xyz' coordinates; give every site one kind")
        cartesian = is_cart
        label = site.get("label")
        labels.append(label[:100] if isinstance(label, str) else None)
        props = site.get("properties") or {}
        if not isinstance(props, dict):
            raise StructureError(f"the 'properties' of site {i} is not an object")
        for key, value in props.items():
            _check_property(key, value, i)
            properties.setdefault(key, [None] * len(sites))[i] = value
    charge = obj.get("charge")
    if charge is not None and not _is_number(charge):
        raise StructureError("this JSON's 'charge' is not a number")
    from pymatgen.core import Structure

    return Structure(
        lattice,
        species,
        coords,
        charge=charge,
        coords_are_cartesian=bool(cartesian),
        site_properties=properties or None,
        labels=labels if all(lb is not None for lb in labels) else None,
    )


def _non_finite(name: str) -> float:
    return float(name)  # NaN / Infinity are refused later, as coordinates or lattice values


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_tree(obj: object, *, keys: bool) -> None:
    """Walk a document (iteratively): bounded depth, and (``keys``) no request to load code."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise StructureError(f"this JSON is nested more than {MAX_DEPTH} levels deep; it is not a pymatgen Structure")
        if isinstance(node, dict):
            if keys:
                _check_object_keys(node)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _check_object_keys(node: dict) -> None:
    if "@callable" in node:
        raise StructureError(
            "this JSON asks to call Python code (an '@callable' entry); SEN reads only plain pymatgen Structure JSON"
        )
    module = node.get("@module")
    if module is not None and not (isinstance(module, str) and (module == "pymatgen" or module.startswith("pymatgen."))):
        raise StructureError(
            f"this JSON asks to load the Python module {str(module)[:60]!r} ('@module'); "
            "SEN reads only plain pymatgen Structure JSON"
        )


def _vector(value: object, what: str, n: int = 3) -> list[float]:
    if not isinstance(value, list) or len(value) != n or not all(_is_number(x) for x in value):
        raise StructureError(f"{what} must be a list of {n} numbers")
    return [float(x) for x in value]


def _lattice(d: object):
    from pymatgen.core import Lattice

    if not isinstance(d, dict):
        raise StructureError("this JSON's 'lattice' is not an object with a 'matrix'")
    pbc = d.get("pbc", (True, True, True))
    if not (isinstance(pbc, list | tuple) and len(pbc) == 3 and all(isinstance(p, bool) for p in pbc)):
        raise StructureError("this JSON's lattice 'pbc' must be three true/false values")
    if "matrix" in d:
        m = d["matrix"]
        if not isinstance(m, list) or len(m) != 3:
            raise StructureError("the lattice 'matrix' must be three vectors of three numbers (Å)")
        rows = [_vector(r, "each row of the lattice 'matrix'") for r in m]
        if not all(math.isfinite(x) for r in rows for x in r):
            raise StructureError("lattice contains NaN or infinite numbers")
        return Lattice(rows, pbc=tuple(pbc))
    try:
        params = [d[k] for k in ("a", "b", "c", "alpha", "beta", "gamma")]
    except KeyError:
        raise StructureError(
            "this JSON's lattice has neither a 'matrix' nor all of a, b, c, alpha, beta, gamma"
        ) from None
    if not all(_is_number(x) and math.isfinite(x) for x in params):
        raise StructureError("the lattice parameters a, b, c, alpha, beta, gamma must be finite numbers")
    a, b, c, alpha, beta, gamma = (float(x) for x in params)
    if min(a, b, c) <= 0 or not all(0 < x < 180 for x in (alpha, beta, gamma)):
        raise StructureError("the lattice parameters must be positive lengths and angles between 0 and 180 degrees")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Lattice.from_parameters(a, b, c, alpha, beta, gamma, pbc=tuple(pbc))


def _species(entries: object, i: int, label: object):
    """One ordered species (Element, or Species with an oxidation state) for site ``i``."""
    from pymatgen.core import Element, Species

    if not isinstance(entries, list) or not entries:
        raise StructureError(f"site {i} of this JSON has no 'species' list")
    total = 0.0
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("element"), str):
            raise StructureError(f"site {i} of this JSON has a species without an 'element' symbol")
        occu = e.get("occu", 1)
        if not _is_number(occu) or not math.isfinite(occu):
            raise StructureError(f"site {i} of this JSON has an occupancy that is not a number")
        total += float(occu)
    entry = entries[0]
    symbol = entry["element"]
    if len(entries) > 1 or abs(total - 1.0) > 1e-8:
        name = ", ".join(f"{e['element'][:8]}:{e.get('occu', 1):g}" for e in entries[:4])
        raise StructureError(
            f"structure has partial occupancies / disorder (site {name}); "
            "SEN needs an ordered structure: build an ordered supercell first"
        )
    if not Element.is_valid_symbol(symbol):
        raise StructureError(f"unknown or dummy species {symbol[:20]}; every site must be a real chemical element")
    oxi = entry.get("oxidation_state")
    if oxi is None:
        return Element(symbol)
    if not _is_number(oxi) or not math.isfinite(oxi) or abs(oxi) > 20:
        raise StructureError(f"site {i} of this JSON has an oxidation state that is not a small number")
    return Species(symbol, oxi)


def _check_property(key: object, value: object, i: int) -> None:
    """Site properties must be plain: numbers, strings, booleans, null, or (nested) lists of those."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, _PLAIN):
            if isinstance(v, str) and len(v) > 10_000:
                raise StructureError(f"site property {str(key)[:40]!r} of site {i} is a text over 10,000 characters")
            continue
        if isinstance(v, list) and depth < MAX_PROPERTY_DEPTH:
            stack.extend((x, depth + 1) for x in v)
            continue
        if isinstance(v, dict) and ("@module" in v or "@class" in v):
            raise StructureError(
                f"site property {str(key)[:40]!r} of site {i} is a Python object "
                f"({str(v.get('@module', ''))[:40]}.{str(v.get('@class', ''))[:40]}); SEN reads only plain values "
                "(numbers, strings and lists of them)"
            )
        raise StructureError(
            f"site property {str(key)[:40]!r} of site {i} is not a plain value; SEN reads only numbers, "
            f"strings and lists of them (nested at most {MAX_PROPERTY_DEPTH} deep)"
        )
