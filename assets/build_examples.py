"""Build the example-crystal gallery: ``assets/examples/*.cif`` and ``assets/examples/sources.json``.

Every crystal is built from its space group, experimental lattice parameters and the
Wyckoff positions of its asymmetric unit (``Structure.from_spacegroup``), with the
literature source of the numbers recorded next to it. The conventional cell is written
with every atom explicit (``CifWriter(symprec=None)``), so any CIF reader gets the same
atoms. Running this script again reproduces the files byte for byte:

    python assets/build_examples.py

Settings follow pymatgen's defaults: origin choice 1 for Fd-3m and I4_1/amd, the
hexagonal axes for the rhombohedral groups, the standard (b-unique) setting for P2_1/c.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from sen.io import validate_structure
from sen.symmetry import analyze_symmetry

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


@dataclass(frozen=True)
class Example:
    """One gallery crystal: what it is, how to build it, and where the numbers come from."""

    file: str
    formula: str  # reduced formula, checked against the built cell
    name: str
    space_group: str  # Hermann-Mauguin symbol as spglib prints it
    space_group_number: int
    crystal_system: str
    kind: str  # metal | semiconductor | semimetal | insulator (experimental, room temperature)
    lattice: tuple[float, ...]  # a, b, c (Å), alpha, beta, gamma (degrees)
    species: tuple[str, ...]  # one per asymmetric-unit site
    coords: tuple[tuple[float, float, float], ...]  # fractional coordinates of the asymmetric unit
    source: str


def _cubic(a: float) -> tuple[float, ...]:
    return (a, a, a, 90.0, 90.0, 90.0)


def _tetragonal(a: float, c: float) -> tuple[float, ...]:
    return (a, a, c, 90.0, 90.0, 90.0)


def _hexagonal(a: float, c: float) -> tuple[float, ...]:
    return (a, a, c, 90.0, 90.0, 120.0)


WYCKOFF_1963 = "R. W. G. Wyckoff, Crystal Structures, 2nd ed., vol. 1 (Interscience, New York, 1963)"

EXAMPLES: tuple[Example, ...] = (
    # ---------------------------------------------------------------- cubic
    Example(
        "si_diamond.cif", "Si", "Si (diamond)", "Fd-3m", 227, "cubic", "semiconductor",
        _cubic(5.4310), ("Si",), ((0.0, 0.0, 0.0),),
        "Y. Okada and Y. Tokumaru, J. Appl. Phys. 56, 314 (1984): a = 5.4310 Å at 300 K",
    ),
    Example(
        "gaas_zincblende.cif", "GaAs", "GaAs (zinc blende)", "F-43m", 216, "cubic", "semiconductor",
        _cubic(5.6533), ("Ga", "As"), ((0.0, 0.0, 0.0), (0.25, 0.25, 0.25)),
        "J. S. Blakemore, J. Appl. Phys. 53, R123 (1982): a = 5.6533 Å at 300 K",
    ),
    Example(
        "nacl_rocksalt.cif", "NaCl", "NaCl (rock salt)", "Fm-3m", 225, "cubic", "insulator",
        _cubic(5.6402), ("Na", "Cl"), ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)),
        f"{WYCKOFF_1963}: a = 5.6402 Å",
    ),
    Example(
        "cscl.cif", "CsCl", "CsCl (caesium chloride)", "Pm-3m", 221, "cubic", "insulator",
        _cubic(4.123), ("Cs", "Cl"), ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)),
        f"{WYCKOFF_1963}: a = 4.123 Å",
    ),
    Example(
        "srtio3_perovskite.cif", "SrTiO3", "SrTiO3 (cubic perovskite)", "Pm-3m", 221, "cubic", "insulator",
        _cubic(3.905), ("Sr", "Ti", "O"), ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, 0.5, 0.0)),
        "Y. A. Abramov et al., Acta Cryst. A51, 942 (1995): a = 3.905 Å at room temperature",
    ),
    Example(
        "cu_fcc.cif", "Cu", "Cu (fcc)", "Fm-3m", 225, "cubic", "metal",
        _cubic(3.6149), ("Cu",), ((0.0, 0.0, 0.0),),
        f"{WYCKOFF_1963}: a = 3.6149 Å at 293 K",
    ),
    Example(
        "al_fcc.cif", "Al", "Al (fcc)", "Fm-3m", 225, "cubic", "metal",
        _cubic(4.0495), ("Al",), ((0.0, 0.0, 0.0),),
        f"{WYCKOFF_1963}: a = 4.0495 Å at 298 K",
    ),
    Example(
        "fe_bcc.cif", "Fe", "Fe (bcc, alpha iron)", "Im-3m", 229, "cubic", "metal",
        _cubic(2.8665), ("Fe",), ((0.0, 0.0, 0.0),),
        f"{WYCKOFF_1963}: a = 2.8665 Å at 293 K",
    ),
    # ---------------------------------------------------------------- hexagonal
    Example(
        "mg_hcp.cif", "Mg", "Mg (hcp)", "P6_3/mmc", 194, "hexagonal", "metal",
        _hexagonal(3.2094, 5.2108), ("Mg",), ((1 / 3, 2 / 3, 0.25),),
        f"{WYCKOFF_1963}: a = 3.2094 Å, c = 5.2108 Å at 298 K",
    ),
    Example(
        "zno_wurtzite.cif", "ZnO", "ZnO (wurtzite)", "P6_3mc", 186, "hexagonal", "semiconductor",
        _hexagonal(3.2496, 5.2042), ("Zn", "O"), ((1 / 3, 2 / 3, 0.0), (1 / 3, 2 / 3, 0.3819)),
        "E. H. Kisi and M. M. Elcombe, Acta Cryst. C45, 1867 (1989): a = 3.2496 Å, c = 5.2042 Å, u = 0.3819",
    ),
    Example(
        "graphite.cif", "C", "Graphite (hexagonal, AB stacking)", "P6_3/mmc", 194, "hexagonal", "semimetal",
        _hexagonal(2.464, 6.711), ("C", "C"), ((0.0, 0.0, 0.25), (1 / 3, 2 / 3, 0.25)),
        f"{WYCKOFF_1963}: a = 2.464 Å, c = 6.711 Å; C on 2b and 2c",
    ),
    Example(
        "mos2_2h.cif", "MoS2", "MoS2 (2H, molybdenite)", "P6_3/mmc", 194, "hexagonal", "semiconductor",
        _hexagonal(3.1604, 12.295), ("Mo", "S"), ((1 / 3, 2 / 3, 0.25), (1 / 3, 2 / 3, 0.621)),
        "B. Schönfeld, J. J. Huang and S. C. Moss, Acta Cryst. B39, 404 (1983): a = 3.1604 Å, c = 12.295 Å, "
        "z(S) = 0.621",
    ),
    # ---------------------------------------------------------------- trigonal
    Example(
        "al2o3_corundum.cif", "Al2O3", "Al2O3 (corundum)", "R-3c", 167, "trigonal", "insulator",
        _hexagonal(4.7602, 12.9933), ("Al", "O"), ((0.0, 0.0, 0.35216), (0.30624, 0.0, 0.25)),
        "J. Lewis, D. Schwarzenbach and H. D. Flack, Acta Cryst. A38, 733 (1982): a = 4.7602 Å, "
        "c = 12.9933 Å (hexagonal axes), z(Al) = 0.35216, x(O) = 0.30624",
    ),
    Example(
        "sio2_alpha_quartz.cif", "SiO2", "SiO2 (alpha quartz)", "P3_221", 154, "trigonal", "insulator",
        _hexagonal(4.9160, 5.4054), ("Si", "O"), ((0.4697, 0.0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)),
        "R. A. Levien, C. T. Prewitt and D. J. Weidner, Am. Mineral. 65, 920 (1980): a = 4.9160 Å, "
        "c = 5.4054 Å at 1 atm, x(Si) = 0.4697, O (0.4135, 0.2669, 0.1191); z shifted by +2/3 to the origin "
        "of International Tables vol. A, where Si is on 3a (x, 0, 2/3)",
    ),
    # ---------------------------------------------------------------- tetragonal
    Example(
        "tio2_rutile.cif", "TiO2", "TiO2 (rutile)", "P4_2/mnm", 136, "tetragonal", "semiconductor",
        _tetragonal(4.5937, 2.9587), ("Ti", "O"), ((0.0, 0.0, 0.0), (0.30478, 0.30478, 0.0)),
        "J. K. Burdett et al., J. Am. Chem. Soc. 109, 3639 (1987), 15 K neutron data: a = 4.5937 Å, "
        "c = 2.9587 Å, x(O) = 0.30478",
    ),
    Example(
        "tio2_anatase.cif", "TiO2", "TiO2 (anatase)", "I4_1/amd", 141, "tetragonal", "semiconductor",
        _tetragonal(3.7842, 9.5146), ("Ti", "O"), ((0.0, 0.0, 0.0), (0.0, 0.0, 0.20806)),
        "J. K. Burdett et al., J. Am. Chem. Soc. 109, 3639 (1987), 15 K neutron data: a = 3.7842 Å, "
        "c = 9.5146 Å, z(O) = 0.20806 (origin choice 1)",
    ),
    # ---------------------------------------------------------------- orthorhombic
    Example(
        "lifepo4_olivine.cif", "LiFePO4", "LiFePO4 (olivine, triphylite)", "Pnma", 62, "orthorhombic", "insulator",
        (10.332, 6.010, 4.692, 90.0, 90.0, 90.0),
        ("Li", "Fe", "P", "O", "O", "O"),
        (
            (0.0, 0.0, 0.0),
            (0.28222, 0.25, 0.97472),
            (0.09486, 0.25, 0.41820),
            (0.09678, 0.25, 0.74279),
            (0.45710, 0.25, 0.20602),
            (0.16558, 0.04646, 0.28491),
        ),
        "V. A. Streltsov et al., Acta Cryst. B49, 147 (1993): a = 10.332 Å, b = 6.010 Å, c = 4.692 Å",
    ),
    # ---------------------------------------------------------------- monoclinic
    Example(
        "zro2_baddeleyite.cif", "ZrO2", "ZrO2 (baddeleyite, monoclinic zirconia)", "P2_1/c", 14, "monoclinic", "insulator",
        (5.1505, 5.2116, 5.3173, 90.0, 99.230, 90.0),
        ("Zr", "O", "O"),
        ((0.2754, 0.0395, 0.2083), (0.0700, 0.3317, 0.3447), (0.4496, 0.7569, 0.4792)),
        "C. J. Howard, R. J. Hill and B. E. Reichert, Acta Cryst. B44, 116 (1988), neutron powder data: "
        "a = 5.1505 Å, b = 5.2116 Å, c = 5.3173 Å, beta = 99.23°",
    ),
    # ---------------------------------------------------------------- triclinic
    Example(
        "al2sio5_kyanite.cif", "Al2SiO5", "Al2SiO5 (kyanite)", "P-1", 2, "triclinic", "insulator",
        (7.1262, 7.8520, 5.5724, 89.99, 101.11, 106.03),
        ("Al",) * 4 + ("Si",) * 2 + ("O",) * 10,
        (
            (0.32540, 0.70400, 0.45820),
            (0.29740, 0.69890, 0.95050),
            (0.09980, 0.38620, 0.64030),
            (0.11200, 0.91750, 0.16490),
            (0.29620, 0.06490, 0.70660),
            (0.29100, 0.33170, 0.18920),
            (0.10950, 0.14680, 0.12880),
            (0.12300, 0.68560, 0.18120),
            (0.27470, 0.45450, 0.95470),
            (0.28310, 0.93540, 0.93530),
            (0.10840, 0.15200, 0.66690),
            (0.12190, 0.63070, 0.63890),
            (0.28220, 0.44530, 0.42880),
            (0.29150, 0.94670, 0.46590),
            (0.50080, 0.27490, 0.24400),
            (0.50150, 0.23120, 0.75530),
        ),
        "J. K. Winter and S. Ghose, Am. Mineral. 64, 573 (1979), T = 25 °C (AMCSD 0000733)",
    ),
)  # fmt: skip


def build_structure(example: Example) -> Structure:
    """The conventional cell of ``example`` with every atom explicit."""
    a, b, c, alpha, beta, gamma = example.lattice
    lattice = Lattice.from_parameters(a, b, c, alpha, beta, gamma)
    structure = Structure.from_spacegroup(example.space_group_number, lattice, example.species, example.coords)
    return structure.get_sorted_structure()


def _check(example: Example, structure: Structure) -> None:
    """Refuse to write a crystal whose numbers do not give the stated symmetry or sensible distances."""
    report = analyze_symmetry(structure, symprec=0.01)
    found = (report.space_group_symbol, report.space_group_number, report.crystal_system)
    expected = (example.space_group, example.space_group_number, example.crystal_system)
    found += (structure.composition.reduced_formula,)
    expected += (example.formula,)
    if found != expected:
        raise SystemExit(f"{example.file}: spglib finds {found}, expected {expected}")
    validate_structure(structure)  # e.g. no atoms closer than 0.5 Å
    shortest = min(structure.get_distance(i, j) for i in range(len(structure)) for j in range(i + 1, len(structure)))
    if len(structure) > 1 and shortest < 1.2:
        raise SystemExit(f"{example.file}: two atoms only {shortest:.2f} Å apart; check the coordinates")


def _ascii(text: str) -> str:
    """CIF 1.1 files are ASCII: spell out the few non-ASCII characters used in the sources."""
    for char, spelled in (("Å", "A"), ("°", " deg"), ("ö", "oe")):
        text = text.replace(char, spelled)
    return text.encode("ascii").decode()


def main() -> None:
    """Write every CIF and the sources.json index."""
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    index = []
    for example in EXAMPLES:
        structure = build_structure(example)
        _check(example, structure)
        header = (
            f"# {example.name}: {example.space_group} (No. {example.space_group_number}), SEN Crystal Explorer example\n"
            f"# Structure parameters: {_ascii(example.source)}\n"
        )
        cif = str(CifWriter(structure, symprec=None))
        (EXAMPLES_DIR / example.file).write_text(header + cif, encoding="utf-8")
        index.append(
            {
                "file": example.file,
                "name": example.name,
                "formula": example.formula,
                "space_group": example.space_group,
                "space_group_number": example.space_group_number,
                "crystal_system": example.crystal_system,
                "kind": example.kind,
                "source": example.source,
                "n_atoms": len(structure),
            }
        )
    text = json.dumps(index, indent=1, ensure_ascii=False) + "\n"
    (EXAMPLES_DIR / "sources.json").write_text(text, encoding="utf-8")
    print(f"wrote {len(index)} crystals to {EXAMPLES_DIR}")


if __name__ == "__main__":
    main()
