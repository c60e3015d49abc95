"""sen.io: every supported format reads; every bad input is one StructureError a student can act on."""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import time
from pathlib import Path

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


# ----------------------------------------------------------------------------- hostile input: answered fast

EXAMPLES = sorted((Path(__file__).parents[1] / "assets" / "examples").glob("*.cif"))
REGRESSIONS = sorted((Path(__file__).parent / "data" / "io_regressions").glob("*"))
ANSWER_BUDGET = 2.0  # seconds: every input up to 5 MB is accepted or refused within this


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the bounded parses): unlike wall-clock
    time, it does not grow when other jobs share the machine's cores."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed_error(data: bytes, filename: str) -> tuple[str, float]:
    t = cpu_seconds()
    msg = error_of(data, filename=filename)
    return msg, cpu_seconds() - t


def cif_with_sites(symbol: str, rows, a: float = 20.0) -> bytes:
    head = (
        f"data_t\n_symmetry_space_group_name_H-M '{symbol}'\n_cell_length_a {a}\n_cell_length_b {a}\n"
        f"_cell_length_c {a}\n_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
        "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
        "_atom_site_fract_z\n_atom_site_occupancy\n"
    )
    body = "\n".join(f"Na{k} Na {x:.6f} {y:.6f} {z:.6f} 1" for k, (x, y, z) in enumerate(rows, 1))
    return (head + body + "\n").encode()


def test_p1_supercell_of_21952_atoms_is_refused_before_parsing(crystals):
    big = crystals["NaCl"] * (14, 14, 14)
    data = cif_text(big).encode()
    assert len(big) == 21952 and len(data) > 1_000_000
    msg, seconds = timed_error(data, "supercell.cif")
    assert "21,952 atom sites" in msg and "limit of 500" in msg
    assert seconds < ANSWER_BUDGET


@pytest.mark.parametrize(("symbol", "n_ops"), [("F m -3 m", 192), ("I a -3 d", 96)])
def test_symmetry_expansion_to_tens_of_thousands_of_atoms_is_refused(symbol, n_ops):
    data = cif_with_sites(symbol, np.random.default_rng(0).random((400, 3)))
    msg, seconds = timed_error(data, "exploding.cif")
    assert f"400 atom sites and {n_ops} symmetry operations" in msg and "limit of 500" in msg
    assert seconds < ANSWER_BUDGET


def test_symmetry_from_number_only_is_counted_too():
    data = cif_with_sites("", np.random.default_rng(1).random((50, 3))).replace(
        b"_symmetry_space_group_name_H-M ''", b"_symmetry_Int_Tables_number 225"
    )
    assert "192 symmetry operations" in error_of(data, filename="number.cif")


def test_a_symmetric_file_within_the_limit_still_reads():
    # 8 rows on the 24e orbit (x, 0, 0) of Fm-3m: 1,536 positions to generate, 192 atoms; the
    # pre-scan's lower bound (occupied grid cells / 8) must not refuse it
    data = cif_with_sites("F m -3 m", [(0.02 + 0.058 * k, 0, 0) for k in range(8)], a=40.0)
    assert len(read_structure(data, filename="orbit.cif")) == 192


def test_poscar_and_xyz_counts_of_a_billion_are_refused_at_once():
    poscar = b"NaCl\n1.0\n5.64 0 0\n0 5.64 0\n0 0 5.64\nNa Cl\n1000000000 1\nDirect\n0 0 0\n0.5 0.5 0.5\n"
    msg, seconds = timed_error(poscar, "POSCAR")
    assert "1,000,000,001 atoms on its counts line" in msg and seconds < 0.5
    xyz = b'1000000000\nLattice="5.64 0 0 0 5.64 0 0 0 5.64" Properties=species:S:1:pos:R:3 pbc="T T T"\nNa 0 0 0\n'
    msg, seconds = timed_error(xyz, "big.xyz")
    assert "1,000,000,000 atoms" in msg and seconds < 0.5
    assert "negative atom count" in error_of(poscar.replace(b"1000000000 1", b"-5 7"), filename="POSCAR")


def test_symmetry_loop_longer_than_any_space_group_is_refused(crystals):
    text = cif_text(crystals["Cu"]).replace("  1  'x, y, z'", "\n".join(f"  {i} 'x, y, z'" for i in range(1000)))
    assert "1,000 symmetry operations" in error_of(text, filename="ops.cif")


def test_risky_files_are_parsed_in_a_bounded_worker(crystals):
    import sen.io as sio

    big = crystals["NaCl"] * (4, 4, 4)  # 512 atoms: estimated over the limit, so parsed in the worker
    calls = []
    real = sio.run_bounded
    sio.run_bounded = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        assert "512 atoms" in error_of(cif_text(big), filename="big.cif")
        assert len(read_structure(cif_text(crystals["NaCl"]), filename="small.cif")) == 8
    finally:
        sio.run_bounded = real
    assert len(calls) == 1  # the small file was parsed in-process


def _sleep_forever():
    while True:
        time.sleep(1)


def _allocate_too_much():
    return bytearray(8 * 1024**3)


def test_run_bounded_stops_hangs_and_memory_explosions():
    from sen.io_guard import ReaderFailed, run_bounded

    t = time.perf_counter()
    with pytest.raises(StructureError, match="took longer than 0.3 s"):
        run_bounded(_sleep_forever, time_limit=0.3)
    assert time.perf_counter() - t < 1.5
    with pytest.raises(StructureError, match="too much memory"):
        run_bounded(_allocate_too_much, time_limit=5, memory_limit=256 * 1024**2)
    with pytest.raises(ReaderFailed):
        run_bounded(int, ("not a number",), time_limit=5)
    assert run_bounded(sum, ([1, 2, 3],), time_limit=5) == 6


# ----------------------------------------------------------------------------- coordinates, lattice, density


def test_coordinates_far_outside_the_cell_are_wrapped_or_refused():
    poscar = "x\n1.0\n4 0 0\n0 4 0\n0 0 4\nNa\n1\nDirect\n200 200 200.25\n"
    s = read_structure(poscar, filename="POSCAR")
    assert np.allclose(s.frac_coords, [[200, 200, 200.25]])  # as the file says
    assert np.allclose(validate_structure(s).frac_coords, [[0, 0, 0.25]])  # what gets featurised
    for bad, expected in (("1e4", "over 1000 cells"), ("1e308", "over 1000 cells"), ("nan", "NaN or infinite")):
        assert expected in error_of(poscar.replace("200 200 200.25", f"{bad} 0 0"), filename="POSCAR")


def test_validate_structure_wraps_sites_into_a_copy_and_leaves_the_structure_alone():
    s = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [300.5, -7.5, 0.5]], to_unit_cell=False)
    checked = validate_structure(s)
    assert np.allclose(checked.frac_coords[1], [0.5, 0.5, 0.5])
    assert np.allclose(s.frac_coords[1], [300.5, -7.5, 0.5])  # what the user gave is not changed
    inside = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert validate_structure(inside) is inside


@pytest.mark.parametrize(
    ("lattice", "expected"),
    [
        (Lattice.cubic(1000.0), "1000 Å long, over the limit of 250 Å"),
        (Lattice.from_parameters(500, 500, 5, 90, 90, 0.5), "500 Å long"),
        (Lattice.cubic(1e5), "over the limit of 250 Å"),
        (Lattice([[3, 0, 0], [170, 3, 0], [170, 170, 3]]), "too flat or skewed"),  # 27 Å³ cell, absurd basis
    ],
)
def test_lattices_that_would_explode_the_neighbour_search_are_refused(lattice, expected):
    s = Structure(lattice, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    for text, name in ((json_text(s), "x.json"), (poscar_text(s), "POSCAR")):
        assert expected in error_of(text, filename=name)


def test_too_dense_cell_is_refused():
    rng = np.random.default_rng(0)
    s = Structure(Lattice.cubic(6.0), ["C"] * 200, rng.random((200, 3)))  # 1.08 Å³ per atom
    assert "too dense" in error_of(json_text(s), filename="dense.json")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_crystal_passes_the_new_bounds(path):
    s = read_structure(path)
    assert 1 <= len(s) <= 200 and np.all((s.frac_coords >= 0) & (s.frac_coords < 1))


# ----------------------------------------------------------------------------- messages in the user's terms


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.cif", "data_x\n_cell_length_a 4\nloop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\nNa\n",
         "not a whole number of rows"),
        ("a.cif", "data_x\nloop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
         "Na 0 0 0\n", "cell parameters are missing"),
        ("a.cif", "data_x\n_cell_length_a 0\n_cell_length_b 4\n_cell_length_c 4\n_cell_angle_alpha 90\n"
         "_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_fract_x\n"
         "_atom_site_fract_y\n_atom_site_fract_z\nNa 0 0 0\n", "cell length is zero"),
        ("notes.txt", "just some notes\nabout my crystal\nnothing more\n", "does not look like a CIF, POSCAR"),
        (None, "hello\nworld\n", "does not look like a CIF, POSCAR"),
    ],
)  # fmt: skip
def test_broken_files_get_messages_in_the_users_terms(name, text, expected):
    msg = error_of(text, filename=name)
    assert expected in msg
    for internal in ("modulo", "index out of range", "object", "Error", "NoneType", "'str'"):
        assert internal not in msg, msg


# ----------------------------------------------------------------------------- JSON never loads code


def test_json_asking_for_a_module_imports_nothing(crystals):
    d = crystals["CsCl"].as_dict()
    fake = "sen_no_such_module_for_tests"
    assert "this" not in sys.modules and fake not in sys.modules
    for payload in ({"@module": "this", "@class": "x"}, {"@module": fake, "@class": "Evil"}):
        d["sites"][0]["properties"] = {"magmom": payload}
        before = set(sys.modules)
        msg = error_of(json.dumps(d), filename="evil.json")
        assert "Python object" in msg or "module" in msg
        assert set(sys.modules) == before


def test_json_callable_is_never_called(crystals, monkeypatch):
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    d = crystals["CsCl"].as_dict()
    d["sites"][0]["properties"] = {"x": {"@module": "os", "@callable": "system"}}
    assert "@callable" in error_of(json.dumps(d), filename="evil.json")
    top = {"@module": "os", "@callable": "system", "lattice": d["lattice"], "sites": d["sites"]}
    assert "@callable" in error_of(json.dumps(top), filename="evil.json")
    assert not called


def test_json_reader_keeps_what_a_crystal_is_made_of(crystals):
    s = crystals["SrTiO3"].copy()
    s.add_oxidation_state_by_element({"Sr": 2, "Ti": 4, "O": -2})
    s.add_site_property("magmom", [0.0, 0.5, 0, 0, 0])
    s.add_site_property("selective_dynamics", [[True, True, False]] * 5)
    back = read_structure(json_text(s), filename="sto.json")
    assert back == s and back.site_properties["magmom"] == [0.0, 0.5, 0, 0, 0]
    assert str(back[1].specie) == "Ti4+"
    d = s.as_dict()
    d["lattice"] = {k: d["lattice"][k] for k in ("a", "b", "c", "alpha", "beta", "gamma")}
    for site in d["sites"]:
        del site["abc"]
    assert same_crystal(read_structure(json.dumps(d), filename="params.json"), s)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested"),
        ('{"lattice": {"matrix": [[4,0,0],[0,4,0],[0,0,4]]}, "sites": [' + "[" * 40 + "]" * 40 + "]}", "nested"),
        ('{"lattice": {"matrix": [[4,0,0],[0,4,0],[0,0,4]]}, "sites": [{"species": [{"element": "Na", "occu": 1}],'
         ' "abc": [0, 0, "x"]}]}', "list of 3 numbers"),
        ('{"lattice": {"matrix": [[4,0,0],[0,4,0],[0,0,4]]}, "sites": [{"species": [{"element": "Na", "occu": 1}],'
         ' "abc": [NaN, 0, 0]}]}', "NaN or infinite"),
        ('{"lattice": {"matrix": [[4,0,0],[0,4,0],[0,0,4]]}, "sites": [{"species": [{"element": "Na", "occu": 1}],'
         ' "abc": [0, 0, 0], "properties": {"p": {"a": 1}}}]}', "not a plain value"),
        ('{"lattice": {"matrix": "big"}, "sites": []}', "three vectors"),
        ('{"lattice": {"matrix": [[4,0,0],[0,4,0],[0,0,4]]}, "sites": [' + ", ".join(['{"abc": [0,0,0]}'] * 501)
         + "]}", "501 atoms"),
    ],
)  # fmt: skip
def test_json_malformed_or_oversized_is_refused(payload, expected):
    assert expected in error_of(payload, filename="x.json")


# ----------------------------------------------------------------------------- regressions from fuzzing


#: What each regression input must produce: a message fragment, or the atom count it is accepted with.
REGRESSION_OUTCOMES = {
    "quotes_line__q.cif": "line of 69,",
    "unclosed_quotes_30k__q.cif": "packed with quote marks",  # took 2.1 s in a bounded parse
    "xyz_long_comment__h.xyz": "line of 70,",
    "three_blocks__b.cif": "contains 3 structures",
    "repeated_block__r.cif": 2,
    "loop_fewer_values_than_columns__m.cif": "not a whole number of rows",
    "plain_text__notes.txt": "does not look like",
    "zero_cell__z.cif": "cell length is zero",
    "atom_at_200__POSCAR": "too dense",  # 1 Å³ per atom: wrapped, then refused for density, not memory
    "lattice_1e5__POSCAR": "over the limit of 250 Å",
    "flat_500__POSCAR": "over the limit of 250 Å",
    "module_this__evil.json": "load the Python module 'this'",
    "callable_os_system__evil.json": "@callable",
    "deep_json__d.json": "nested",
    "r-3c_2000_sites__s.cif": "36 symmetry operations",
}


def test_every_regression_input_has_an_expected_outcome():
    assert sorted(REGRESSION_OUTCOMES) == sorted(p.name for p in REGRESSIONS)


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
def test_fuzz_regression_inputs_are_answered_cleanly(path):
    expected = REGRESSION_OUTCOMES[path.name]
    name = path.name.split("__", 1)[-1]  # files are stored as <id>__<name the input was read as>
    t = cpu_seconds()
    try:
        s = read_structure(path.read_bytes(), filename=name)
    except StructureError as exc:
        assert isinstance(expected, str) and expected in str(exc) and "\n" not in str(exc), str(exc)
    else:
        validate_structure(s)
        assert len(s) == expected
    assert cpu_seconds() - t < ANSWER_BUDGET


_LIFEPO4 = Path(__file__).parents[1] / "assets" / "examples" / "lifepo4_olivine.cif"


def test_a_read_structure_changed_afterwards_is_checked_again():
    from sen.io import validate_structure

    s = read_structure(_LIFEPO4)
    assert validate_structure(s) is s  # unchanged since read_structure checked it
    s.translate_sites([1], s[0].coords - s[1].coords, frac_coords=False)  # atom 1 onto atom 0
    with pytest.raises(StructureError, match="closer than|too close|0.5"):
        validate_structure(s)
    t = read_structure(_LIFEPO4)
    t.replace(0, DummySpecies("X"))
    with pytest.raises(StructureError):
        validate_structure(t)
    u = read_structure(_LIFEPO4)
    with pytest.raises(StructureError, match="over the limit of 20"):
        validate_structure(u, max_atoms=20)  # checked against a larger limit when it was read
