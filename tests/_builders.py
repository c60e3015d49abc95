"""Tiny crystal datasets for the data, training and evaluation tests, built from pymatgen structures.

Every dataset here is written by the tests themselves (never ../shared/data): primitive
rock-salt, CsCl, fcc and bcc cells with varied elements and lattice constants, and targets
that are smooth, deterministic functions of the lattice constant and composition.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pymatgen.core import Element, Lattice, Structure
from pymatgen.io.cif import CifWriter

# Shannon-like ionic radii (Å) to give each rock salt a plausible lattice constant.
CATION_RADII = {"Li": 0.76, "Na": 1.02, "K": 1.38, "Rb": 1.52, "Mg": 0.72, "Ca": 1.00, "Sr": 1.18, "Ba": 1.35}
ANION_RADII = {"F": 1.33, "Cl": 1.81, "Br": 1.96, "O": 1.40, "S": 1.84}
# CsCl-type pairs and elemental metals with their (approximate) cubic lattice constants (Å).
CSCL = {("Cs", "Cl"): 4.12, ("Cs", "Br"): 4.29, ("Cs", "I"): 4.57, ("Tl", "Cl"): 3.84, ("Tl", "Br"): 3.97}
FCC = {"Cu": 3.615, "Al": 4.05, "Ni": 3.52, "Ag": 4.09, "Au": 4.08, "Pb": 4.95}
BCC = {"Fe": 2.87, "Cr": 2.91, "Mo": 3.15, "W": 3.16, "Na": 4.29}


@dataclass
class Crystal:
    """One built crystal with its id and targets (eV/atom, eV)."""

    id: str
    structure: Structure
    formation_energy_per_atom: float
    band_gap: float

    def targets(self) -> dict[str, float]:
        """Both targets by name."""
        return {"formation_energy_per_atom": self.formation_energy_per_atom, "band_gap": self.band_gap}


def fcc_lattice(a: float) -> Lattice:
    """Primitive fcc lattice of conventional cubic lattice constant ``a`` (Å)."""
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def bcc_lattice(a: float) -> Lattice:
    """Primitive bcc lattice of conventional cubic lattice constant ``a`` (Å)."""
    return Lattice([[-a / 2, a / 2, a / 2], [a / 2, -a / 2, a / 2], [a / 2, a / 2, -a / 2]])


# Primitive cells are built from lattice vectors directly: Structure.from_spacegroup("Fm-3m", ...)
# gives the same crystals but takes about a second per call (it expands all 192 operations).
def rock_salt(cation: str, anion: str, a: float) -> Structure:
    """Primitive rock-salt cell (2 atoms, Fm-3m)."""
    return Structure(fcc_lattice(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl(a_el: str, b_el: str, a: float) -> Structure:
    """CsCl-type cell (2 atoms, Pm-3m)."""
    return Structure(Lattice.cubic(a), [a_el, b_el], [[0, 0, 0], [0.5, 0.5, 0.5]])


def fcc(el: str, a: float) -> Structure:
    """Primitive fcc cell (1 atom)."""
    return Structure(fcc_lattice(a), [el], [[0, 0, 0]])


def bcc(el: str, a: float) -> Structure:
    """Primitive bcc cell (1 atom)."""
    return Structure(bcc_lattice(a), [el], [[0, 0, 0]])


def _targets(structure: Structure, a: float, metal: bool) -> tuple[float, float]:
    """Smooth made-up targets: formation energy from electronegativity difference and lattice constant."""
    xs = [Element(str(el)).X for el in structure.composition.elements]
    dx = max(xs) - min(xs)
    fe = round(-0.9 * dx - 0.08 * (a - 4.0), 6)
    gap = 0.0 if metal else round(max(0.0, 1.8 * dx + 0.3 * math.cos(a)), 6)
    return fe, gap


def crystals(n: int = 40) -> list[Crystal]:
    """``n`` (at most 60) distinct small cubic crystals with deterministic targets."""
    out: list[Crystal] = []
    specs: list[tuple[Structure, float, bool]] = []
    for i, (cation, rc) in enumerate(CATION_RADII.items()):
        for j, (anion, ra) in enumerate(ANION_RADII.items()):
            a = 2 * (rc + ra) * (1.0 + 0.01 * ((i + j) % 3))
            specs.append((rock_salt(cation, anion, a), a, False))
    specs += [(cscl(x, y, a), a, False) for (x, y), a in CSCL.items()]
    specs += [(fcc(el, a), a, True) for el, a in FCC.items()]
    specs += [(bcc(el, a), a, True) for el, a in BCC.items()]
    # interleave kinds so the first n crystals mix rock salts, CsCl and metals
    order = sorted(range(len(specs)), key=lambda k: (k * 7) % len(specs))
    for k in order[:n]:
        structure, a, metal = specs[k]
        fe, gap = _targets(structure, a, metal)
        out.append(Crystal(f"tc-{k}", structure, fe, gap))
    return out


def cif_text(structure: Structure) -> str:
    """CIF text of a structure."""
    return str(CifWriter(structure))


def disordered_cif() -> str:
    """CIF of an fcc cell with a 50/50 Fe/Co site (partial occupancy)."""
    s = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    return cif_text(s)


def too_close_cif() -> str:
    """CIF with two atoms 0.2 Å apart."""
    return cif_text(Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.04, 0, 0]]))


GARBAGE_CIF = "data_broken\n_cell_length_a five\nthis is not a crystal\n"


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    """Write rows as (gzip, if the name ends in .gz) JSON Lines; a str row is written as it is."""
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl_rows(items: list[Crystal]) -> list[dict]:
    """MP-style rows: material_id, targets, cif."""
    return [{"material_id": c.id, **c.targets(), "cif": cif_text(c.structure)} for c in items]


def write_dataset(path: Path, n: int = 40) -> tuple[Path, list[Crystal]]:
    """A gzip JSON Lines dataset of ``n`` good crystals; returns its path and the crystals."""
    items = crystals(n)
    return write_jsonl(path, jsonl_rows(items)), items


def write_matbench(path: Path, structures: list[dict | Structure], targets: list[float], index: list[str]) -> Path:
    """Matbench-style json(.gz): one ``structure`` column and one target column ``e_form``."""
    data = [[s.as_dict() if isinstance(s, Structure) else s, t] for s, t in zip(structures, targets, strict=True)]
    obj = {"index": index, "columns": ["structure", "e_form"], "data": data}
    text = json.dumps(obj)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_cgcnn(folder: Path, entries: list[tuple[str, str | None, str]]) -> Path:
    """CGCNN folder: ``<id>.cif`` for every entry with CIF text (None: no file) and ``id_prop.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "id_prop.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        for cid, cif, target in entries:
            if cif is not None:
                (folder / f"{cid}.cif").write_text(cif, encoding="utf-8")
            w.writerow([cid, target])
    return folder


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """CSV with a cif column."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path
