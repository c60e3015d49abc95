"""sen.io: every supported format reads; every bad input is one StructureError a student can act on."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from ase.io import write as ase_write
from pymatgen.core import DummySpecies, Lattice, Molecule, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

from sen.errors import StructureError
from sen.io import DEFAULT_MAX_ATOMS, DEFAULT_MAX_BYTES, detect_format, read_structure, validate_structure


def cif_text(structure: Structure) -> str:
    return str(CifWriter(structure))


def poscar_text(structure: Structure) -> str:
    return Poscar(structure).get_str()


def extxyz_text(structure: Structure) -> str:
    buf = io.StringIO()
    ase_write(buf, AseAtomsAdaptor.get_atoms(structure), format="extxyz")
    return buf.getvalue()


def json_text(structure: Structure) -> str:
    return json.dumps(structure.as_dict())


WRITERS = {"x.cif": cif_text, "POSCAR": poscar_text, "CONTCAR": poscar_text, "x.vasp": poscar_text,
           "x.xyz": extxyz_text, "x.extxyz": extxyz_text, "x.json": json_text}  # fmt: skip


def same_crystal(a: Structure, b: Structure) -> bool:
    return a.composition == b.composition and np.allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-5)


def error_of(source, **kwargs) -> str:
    """The StructureError message for ``source``, checked to be a single line."""
    with pytest.raises(StructureError) as info:
        read_structure(source, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


# ----------------------------------------------------------------------------- good input


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_format_reads_from_path_bytes_and_text(name, crystals, tmp_path):
    rutile = crystals["TiO2"]
    text = WRITERS[name](rutile)
    path = tmp_path / name
    path.write_text(text)
    for source, kwargs in (
        (path, {}),
        (str(path), {}),
        (text.encode(), {"filename": name}),
        (text, {"filename": name}),
    ):
        s = read_structure(source, **kwargs)
        assert same_crystal(s, rutile), (name, type(source))
        assert s.is_ordered and len(s) == 6


def test_contcar_with_suffix_and_poscar_without_filename_are_detected(crystals, tmp_path):
    text = poscar_text(crystals["NaCl"])
    assert detect_format("CONTCAR_relaxed", text) == "poscar"
    assert detect_format("POSCAR.initial", text) == "poscar"
    (tmp_path / "CONTCAR_relaxed").write_text(text)
    assert len(read_structure(tmp_path / "CONTCAR_relaxed")) == 8
    assert len(read_structure(text)) == 8  # no file name: recognised from the content


def test_content_sniffing_without_filename(crystals):
    nacl = crystals["NaCl"]
    for text, fmt in ((cif_text(nacl), "cif"), (json_text(nacl), "json"), (extxyz_text(nacl), "extxyz")):
        assert detect_format(None, text) == fmt
        assert same_crystal(read_structure(text), nacl)


def test_one_line_json_text_is_content_not_a_path(crystals):
    text = json_text(crystals["CsCl"])
    assert "\n" not in text
    assert same_crystal(read_structure(text), crystals["CsCl"])


def test_forced_format_and_unknown_format(crystals):
    text = cif_text(crystals["Cu"])
    assert len(read_structure(text, fmt="cif")) == 4
    assert "unknown format 'pdb'" in error_of(text, fmt="pdb")


def test_latin1_and_bom_text_is_decoded(crystals):
    text = "# made by a program from Malmö\n" + cif_text(crystals["Cu"])
    assert len(read_structure(text.encode("latin-1"), filename="cu.cif")) == 4
    assert len(read_structure(b"\xef\xbb\xbf" + text.encode("utf-8"), filename="cu.cif")) == 4


def test_json_record_with_structure_key(crystals):
    record = json.dumps({"material_id": "mp-22862", "structure": crystals["NaCl"].as_dict()})
    assert len(read_structure(record, filename="entry.json")) == 8


def test_gallery_sized_file_within_limits(crystals):
    big = crystals["Al2O3"] * (2, 2, 2)  # 240 atoms: allowed by the default limit of 500
    assert len(read_structure(cif_text(big), filename="big.cif")) == 240


# ----------------------------------------------------------------------------- bad input


def test_empty_and_whitespace_files(tmp_path):
    (tmp_path / "empty.cif").write_bytes(b"")
    for source in (tmp_path / "empty.cif", b"", b"  \n\t\n"):
        msg = error_of(source, filename="empty.cif")
        assert "empty" in msg and "CIF" in msg


def test_binary_file():
    msg = error_of(bytes(range(256)) * 4, filename="image.cif")
    assert "binary" in msg


def test_missing_file(tmp_path):
    msg = error_of(tmp_path / "nope.cif")
    assert "file not found" in msg and "nope.cif" in msg


def test_unsupported_source_type():
    assert "pass a path, bytes or text" in error_of(3.14)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("broken.cif", "data_broken\n_cell_length_a five\nthis is not a crystal\n", "CIF"),
        ("POSCAR", "hello\nworld\n", "POSCAR"),
        ("broken.json", '{"lattice": [1, 2', "JSON"),
        ("other.json", '{"name": "not a structure"}\n', "pymatgen Structure"),
        ("broken.xyz", "2\nnot extended xyz\nNa 0 0\n", "XYZ"),
    ],
)
def test_unparseable_content(name, text, expected):
    msg = error_of(text.encode(), filename=name)
    assert expected in msg


def test_molecule_xyz_without_lattice_is_refused():
    water = Molecule(["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    msg = error_of(water.to(fmt="xyz"), filename="water.xyz")
    assert "molecule" in msg and "Lattice=" in msg


def test_molecule_json_without_lattice_is_refused():
    water = Molecule(["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    msg = error_of(json.dumps(water.as_dict()), filename="water.json")
    assert "molecule" in msg and "lattice" in msg


def test_partial_occupancy_is_refused():
    alloy = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    for text, name in ((cif_text(alloy), "alloy.cif"), (json_text(alloy), "alloy.json")):
        msg = error_of(text, filename=name)
        assert "partial occupancies" in msg and "ordered" in msg


def test_atoms_too_close_are_refused():
    s = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.04, 0, 0]])  # 0.2 Å apart
    msg = error_of(cif_text(s), filename="close.cif")
    assert "0.20 Å apart" in msg and "minimum 0.5 Å" in msg


def test_atoms_close_across_the_cell_boundary_are_refused():
    s = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0.01, 0, 0], [0.98, 0, 0]])  # 0.15 Å through the boundary
    assert "Å apart" in error_of(poscar_text(s), filename="POSCAR")


def test_tiny_lattice_vector_is_refused():
    s = Structure(Lattice.orthorhombic(5.0, 5.0, 0.3), ["Na"], [[0, 0, 0]])
    assert "lattice vector is only 0.30 Å" in error_of(json_text(s), filename="flat.json")


@pytest.mark.parametrize("symbol", ["X", "Xx"])
def test_dummy_species_in_cif_is_refused(crystals, symbol):
    text = cif_text(crystals["NaCl"]).replace("  Cl  Cl", f"  {symbol}  {symbol}")
    msg = error_of(text, filename="dummy.cif")
    assert "dummy species" in msg and "real chemical element" in msg


def test_dummy_species_in_poscar_xyz_and_json_is_refused(crystals):
    nacl = crystals["NaCl"]
    assert "dummy species" in error_of(poscar_text(nacl).replace("Na Cl", "Na X"), filename="POSCAR")
    xyz = (
        '2\nLattice="5.64 0 0 0 5.64 0 0 0 5.64" Properties=species:S:1:pos:R:3 pbc="T T T"\nNa 0 0 0\nX 2.8 2.8 2.8\n'
    )
    assert "dummy species" in error_of(xyz, filename="a.xyz")
    s = Structure(Lattice.cubic(4.0), ["Na", DummySpecies("X")], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert "dummy species" in error_of(json_text(s), filename="d.json")


def test_nan_and_inf_coordinates_are_refused(crystals):
    lines = poscar_text(crystals["CsCl"]).splitlines()
    for bad in ("nan", "inf"):
        changed = lines[:-1] + [f"{bad} 0.5 0.5 Cl"]
        msg = error_of("\n".join(changed) + "\n", filename="POSCAR")
        assert "NaN or infinite" in msg
    xyz = '2\nLattice="4.1 0 0 0 4.1 0 0 0 4.1" Properties=species:S:1:pos:R:3 pbc="T T T"\nCs 0 0 0\nCl nan 2 2\n'
    assert "NaN or infinite" in error_of(xyz, filename="a.xyz")


def test_nan_lattice_is_refused(crystals):
    text = cif_text(crystals["CsCl"]).replace("_cell_length_a   4.12300000", "_cell_length_a   nan")
    assert "NaN or infinite" in error_of(text, filename="nan.cif")


def test_zero_and_negative_cell_volume_are_refused(crystals):
    d = crystals["CsCl"].as_dict()
    d["lattice"]["matrix"] = [[4.1, 0, 0], [0, 4.1, 0], [4.1, 4.1, 0]]  # coplanar
    assert "volume is zero" in error_of(json.dumps(d), filename="flat.json")
    d["lattice"]["matrix"] = [[4.1, 0, 0], [0, 4.1, 0], [0, 0, -4.1]]  # left-handed
    msg = error_of(json.dumps(d), filename="left.json")
    assert "negative" in msg and "swap two lattice vectors" in msg
    lines = poscar_text(crystals["CsCl"]).splitlines()
    lines[4] = "0.0 0.0 -4.123"
    assert "negative" in error_of("\n".join(lines) + "\n", filename="POSCAR")


def test_too_many_atoms_default_and_configurable(crystals):
    assert DEFAULT_MAX_ATOMS == 500
    big = crystals["NaCl"] * (4, 4, 4)  # 512 atoms
    msg = error_of(cif_text(big), filename="big.cif")
    assert "512 atoms" in msg and "limit of 500" in msg and "primitive cell" in msg
    assert "limit of 4" in error_of(cif_text(crystals["NaCl"]), filename="x.cif", max_atoms=4)
    assert len(read_structure(cif_text(big), filename="big.cif", max_atoms=600)) == 512


def test_file_over_size_limit(tmp_path, crystals):
    assert DEFAULT_MAX_BYTES == 5 * 1024 * 1024
    padding = "#" + "x" * 99 + "\n"
    text = cif_text(crystals["Cu"]) + padding * (DEFAULT_MAX_BYTES // len(padding) + 1)
    path = tmp_path / "huge.cif"
    path.write_text(text)
    for source in (path, text.encode()):
        msg = error_of(source, filename="huge.cif")
        assert "over the 5.0 MB limit" in msg and "single unit cell" in msg
    msg = error_of(cif_text(crystals["Cu"]), filename="cu.cif", max_bytes=100)
    assert "over the 100 bytes limit" in msg


def test_validate_structure_accepts_good_and_refuses_bad(crystals):
    for s in crystals.values():
        validate_structure(s)
    with pytest.raises(StructureError, match="no atoms"):
        validate_structure(Structure(Lattice.cubic(3.0), [], []))
