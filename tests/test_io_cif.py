"""sen.io_cif: the fast reader of plain P1 CIFs returns exactly pymatgen's Structure, and declines the rest."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser, CifWriter

import sen.io_cif
from sen.io import _normalise_cif, read_structure
from sen.io_cif import parse_plain_p1

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
FIXTURE = Path(__file__).parent / "data" / "shipped_crystals.json.gz"
REGRESSIONS = Path(__file__).parent / "data" / "io_regressions"


def pymatgen_structure(text: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = CifParser.from_str(text, occupancy_tolerance=1.0, check_cif=False)
        (structure,) = parser.parse_structures(primitive=False, on_error="raise")
    return structure


def assert_identical(mine: Structure, theirs: Structure) -> None:
    assert len(mine) == len(theirs)
    assert np.array_equal(mine.lattice.matrix, theirs.lattice.matrix)
    assert [s.species for s in mine] == [s.species for s in theirs]  # pymatgen's site order too
    assert np.array_equal(mine.frac_coords, theirs.frac_coords)
    assert [s.label for s in mine] == [s.label for s in theirs]
    assert mine.site_properties == theirs.site_properties


def real_cifs() -> list[tuple[str, str]]:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as fh:
        fixture = [(c["material_id"], c["cif"]) for c in json.load(fh)["crystals"]]
    return [(p.name, p.read_text()) for p in sorted(EXAMPLES.glob("*.cif"))] + fixture


@pytest.mark.parametrize(("name", "text"), real_cifs(), ids=[n for n, _ in real_cifs()])
def test_plain_p1_cifs_read_exactly_as_pymatgen_reads_them(name, text):
    text = _normalise_cif(text)
    mine = parse_plain_p1(text)
    assert mine is not None, f"{name} is a plain P1 CIF"
    assert_identical(mine, pymatgen_structure(text))


def test_thirds_wrapping_and_order_follow_pymatgen():
    lattice = Lattice.hexagonal(3.1, 5.0)
    s = Structure(lattice, ["O", "Zn", "O", "Zn"], [[0.3333, 0.6667, 0.38], [1 / 3, 2 / 3, 0], [0.6667, 0.3333, 0.88],
                                                     [-0.33333, 1.33333, 0.5]])  # fmt: skip
    text = str(CifWriter(s))
    text = text.replace("0.33333333", "0.3333").replace("0.66666667", "0.6667")  # finite-precision thirds
    mine = parse_plain_p1(text)
    assert mine is not None
    assert_identical(mine, pymatgen_structure(text))
    assert [site.specie.symbol for site in mine] == ["Zn", "Zn", "O", "O"]  # electronegativity order
    assert (mine.frac_coords >= 0).all() and (mine.frac_coords < 1).all()


def _edited(old: str, new: str) -> str:
    text = (EXAMPLES / "nacl_rocksalt.cif").read_text()
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("why", "text"),
    [
        ("a symmetry operation besides the identity", _edited("  1  'x, y, z'", "  1  'x, y, z'\n  2  '-x, -y, -z'")),
        ("an oxidation state in the symbol", _edited("  Na  Na0", "  Na+  Na0")),
        ("a partial occupancy", _edited("Na0  1  0.00000000  0.00000000  0.00000000  1", "Na0  1  0.0  0.0  0.0  0.5")),
        ("a standard uncertainty", _edited("_cell_length_a   ", "_cell_length_a   5.64(2) #")),
        ("a tag pymatgen reads more into", _edited("_cell_volume", "_atom_type_oxidation_number_x 1\n_cell_volume")),
        ("a second data block", (EXAMPLES / "nacl_rocksalt.cif").read_text() + "\ndata_two\n_cell_length_a 3\n"),
        ("a deuterium symbol", _edited("  Na  Na0", "  D  Na0")),
    ],
)
def test_other_cifs_are_left_to_pymatgen(why, text):
    assert parse_plain_p1(text) is None, why


def test_near_duplicate_sites_are_left_to_pymatgen():
    s = Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    text = str(CifWriter(s)).replace("0.50000000  0.50000000  0.50000000", "0.00002000  0.00000000  0.99999000")
    assert parse_plain_p1(text) is None  # pymatgen merges such sites; it decides


def test_read_structure_gives_the_same_structures_and_errors_without_the_fast_reader(monkeypatch):
    texts = [t for _, t in real_cifs()[:12]]
    fast = [read_structure(t, filename="x.cif") for t in texts]
    bad = sorted(REGRESSIONS.glob("*.cif"))
    fast_errors = [_error(p) for p in bad]
    monkeypatch.setattr(sen.io_cif, "parse_plain_p1", lambda text, max_sites=None: None)
    for t, mine in zip(texts, fast, strict=True):
        assert_identical(mine, read_structure(t, filename="x.cif"))
    assert [_error(p) for p in bad] == fast_errors


def _error(path: Path) -> str | None:
    from sen.errors import StructureError

    try:
        read_structure(path)
    except StructureError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("_cell_length_a   5.43100000", "_cell_length_a   -5.43100000"),
        ("_cell_length_b   5.43100000", "_cell_length_b   0.0"),
        ("_cell_angle_gamma   90.00000000", "_cell_angle_gamma   180.0"),
        ("_cell_angle_alpha   90.00000000", "_cell_angle_alpha   0"),
    ],
)
def test_a_plain_file_the_pre_scan_refuses_is_refused_in_the_same_words(monkeypatch, old, new):
    text = (EXAMPLES / "si_diamond.cif").read_text()
    assert old in text
    bad = text.replace(old, new)
    errors = []
    for reader in (parse_plain_p1, lambda text, max_sites=None: None):
        monkeypatch.setattr(sen.io_cif, "parse_plain_p1", reader)
        with pytest.raises(Exception) as info:
            read_structure(bad, filename="x.cif")
        errors.append(f"{type(info.value).__name__}: {info.value}")
    assert errors[0] == errors[1]
    assert "cell" in errors[0]


def test_a_plain_file_over_the_atom_limit_is_refused_in_the_same_words(monkeypatch):
    text = (EXAMPLES / "lifepo4_olivine.cif").read_text()
    errors = []
    for reader in (parse_plain_p1, lambda text, max_sites=None: None):
        monkeypatch.setattr(sen.io_cif, "parse_plain_p1", reader)
        with pytest.raises(Exception) as info:
            read_structure(text, filename="x.cif", max_atoms=20)
        errors.append(f"{type(info.value).__name__}: {info.value}")
    assert errors[0] == errors[1]
    assert "28" in errors[0] and "20" in errors[0]


def test_a_plain_file_of_many_sites_is_declined_before_work_that_grows_with_their_square():
    rows = "".join(f"  Na  Na{i}  1  {i / 4000:.6f}  0.25  0.25  1\n" for i in range(3000))
    text = (EXAMPLES / "cscl.cif").read_text().split("loop_\n _atom_site_type_symbol")[0]
    text += "loop_\n _atom_site_type_symbol\n _atom_site_label\n _atom_site_symmetry_multiplicity\n"
    text += " _atom_site_fract_x\n _atom_site_fract_y\n _atom_site_fract_z\n _atom_site_occupancy\n" + rows
    assert len(parse_plain_p1(text)) == 3000
    assert parse_plain_p1(text, max_sites=600) is None
