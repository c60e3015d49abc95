"""Fuzzing sen.io with hypothesis: whatever the bytes, read_structure answers with a Structure or a
StructureError, quickly, and an accepted structure passes validate_structure.

Derandomised (a fixed seed) so that CI sees the same ~2,600 inputs every run; about 40 s on one core.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.core import Structure

from sen.errors import StructureError
from sen.io import read_structure, validate_structure

EXAMPLES = {p.name: p.read_bytes() for p in sorted((Path(__file__).parents[1] / "assets" / "examples").glob("*.cif"))}
ANSWER_BUDGET = 2.0  # seconds
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

NAMES = ["x.cif", "POSCAR", "x.xyz", "x.json", None]
NUMBERS = ["0", "-0", "1", "200", "-200", "1e3", "1e308", "-1e308", "1e-308", "nan", "NaN", "inf", "-inf", "1e999",
           "0.5", "1.0000001", "99999999999999999999", "-1", "1(2)", "?", ".", "0x10", "1_0", "\u0661"]  # fmt: skip
TOKENS = [b"loop_\n", b"_atom_site_label\n", b"_symmetry_equiv_pos_as_xyz\n", b"'x, y, z'\n", b"data_x\n", b";\n",
          b"'", b'"', b"#", b"\n", b"\r", b" ", b"\t", b"_cell_length_a 0\n", b"_symmetry_Int_Tables_number 225\n",
          b"_space_group_name_Hall 'F 4 2 3'\n", "é".encode(), "\u2028".encode(), b"\xff", b"\x1c"]  # fmt: skip
SYMBOLS = ["P 1", "F m -3 m", "I a -3 d", "P 6/m m m", "R -3 c", "F d -3 m", "Q 9", ""]


def _warm_up() -> None:
    """First use of each reader imports its library (pymatgen.io.vasp alone takes seconds on a busy
    machine), and the first CIF of a space group given only by its symbol makes pymatgen build the
    group (0.3-0.9 s, then held by sen.io_scan): one-time costs per process, paid before timing."""
    s = read_structure(EXAMPLES["nacl_rocksalt.cif"], filename="nacl.cif")
    from pymatgen.io.vasp import Poscar

    read_structure(Poscar(s).get_str(), filename="POSCAR")
    for symbol in SYMBOLS:
        try:
            read_structure(cif_of(symbol, [("0", "0", "0")], ["5", "5", "5", "90", "90", "90"]), filename="w.cif")
        except StructureError:
            pass
    read_structure('1\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"\nNa 0 0 0\n', filename="a.xyz")



def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the bounded parses); wall-clock time
    would grow with whatever else shares the machine."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def check_answer(data: bytes | str, filename: str | None) -> None:
    """The property: a Structure that validates, or one single-line StructureError; within the budget."""
    t = cpu_seconds()
    try:
        s = read_structure(data, filename=filename)
    except StructureError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "Traceback" not in msg
    else:
        assert isinstance(s, Structure)
        validate_structure(s)
    elapsed = cpu_seconds() - t
    assert elapsed < ANSWER_BUDGET, f"took {elapsed:.2f} s of CPU"


@st.composite
def mutated_example(draw) -> tuple[bytes, str | None]:
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    data = bytearray(EXAMPLES[name])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "token", "number", "truncate", "repeat"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "token":
            data[i:i] = draw(st.sampled_from(TOKENS))
        elif op == "number":
            j = data.find(b" ", i)
            if j != -1:
                data[j + 1 : j + 1] = draw(st.sampled_from(NUMBERS)).encode() + b" "
        elif op == "truncate":
            del data[i:]
        elif op == "repeat":
            line_end = data.find(b"\n", i)
            line = bytes(data[i : line_end + 1 if line_end != -1 else len(data)])
            data[i:i] = line * draw(st.integers(2, 3000))
    return bytes(data), draw(st.sampled_from([name, *NAMES]))


@given(mutated_example())
@settings(FUZZ, max_examples=1200)
def test_mutated_example_files(case):
    check_answer(*case)


def cif_of(symbol: str, coords: list[tuple[str, str, str]], cell: list[str]) -> str:
    head = f"data_f\n_symmetry_space_group_name_H-M '{symbol}'\n"
    head += "".join(f"_cell_{k} {v}\n" for k, v in zip(
        ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma"), cell, strict=True))  # fmt: skip
    head += "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
    return head + "".join(f"Na{i} Na {x} {y} {z}\n" for i, (x, y, z) in enumerate(coords))


_warm_up()

number = st.one_of(st.sampled_from(NUMBERS), st.floats(allow_nan=True, allow_infinity=True).map(repr))
coordinate = st.one_of(number, st.floats(0, 1).map(lambda x: f"{x:.5f}"))


@given(
    st.sampled_from(SYMBOLS),
    st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=1, max_size=600),
    st.lists(st.one_of(number, st.sampled_from(["5.0", "90", "120", "60", "0.5", "250", "300"])), min_size=6, max_size=6),
)
@settings(FUZZ, max_examples=500)
def test_generated_cifs_with_symmetry_and_hostile_numbers(symbol, coords, cell):
    check_answer(cif_of(symbol, coords, cell), "gen.cif")


@given(
    st.lists(number, min_size=9, max_size=9),
    st.sampled_from(["1.0", "-1.0", "-50", "0", "1e308", "nan"]),
    st.lists(st.integers(-3, 2_000_000_000).map(str), min_size=1, max_size=3),
    st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=0, max_size=8),
    st.sampled_from(["Direct", "Cartesian", "Selective dynamics\nDirect", "x"]),
)
@settings(FUZZ, max_examples=400)
def test_generated_poscars(lattice, scale, counts, coords, mode):
    species = " ".join(["Na", "Cl", "O"][: len(counts)])
    rows = "".join(f"{x} {y} {z}\n" for x, y, z in coords)
    text = f"fuzz\n{scale}\n{' '.join(lattice[:3])}\n{' '.join(lattice[3:6])}\n{' '.join(lattice[6:])}\n"
    check_answer(f"{text}{species}\n{' '.join(counts)}\n{mode}\n{rows}", "POSCAR")


@given(
    st.one_of(st.integers(-5, 2_000_000_000).map(str), st.sampled_from(["", "x", "1e9", "2.0"])),
    st.lists(number, min_size=9, max_size=9),
    st.lists(st.tuples(st.sampled_from(["Na", "Cl", "X", "Zz", ""]), number, number, number), max_size=6),
    st.sampled_from(['pbc="T T T"', 'pbc="F F F"', "", 'pbc="T"']),
    st.integers(0, 20_000),
)
@settings(FUZZ, max_examples=300)
def test_generated_extended_xyz(count, lattice, atoms, pbc, padding):
    comment = f'Lattice="{" ".join(lattice)}" Properties=species:S:1:pos:R:3 {pbc} note="{"a" * padding}"'
    rows = "".join(f"{el} {x} {y} {z}\n" for el, x, y, z in atoms)
    check_answer(f"{count}\n{comment}\n{rows}", "fuzz.xyz")


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["@module", "@class", "@callable", "element", "occu", "abc", "xyz", "a"]),
                        children, max_size=4),  # fmt: skip
    ),
    max_leaves=30,
)


@given(
    st.one_of(
        st.lists(st.lists(number, min_size=3, max_size=3), min_size=3, max_size=3).map(lambda m: {"matrix": m}),
        json_value,
    ),
    st.lists(
        st.fixed_dictionaries(
            {"species": st.one_of(
                st.lists(st.fixed_dictionaries({"element": st.sampled_from(["Na", "Cl", "X", "Xx", "this"]),
                                                "occu": st.sampled_from([1, 0.5, 2, -1])}), min_size=1, max_size=2),
                json_value)},  # fmt: skip
            optional={"abc": st.one_of(st.lists(st.floats(allow_nan=True), min_size=3, max_size=3), json_value),
                      "properties": st.dictionaries(st.text(max_size=5), json_value, max_size=3)},  # fmt: skip
        ),
        max_size=6,
    ),
    st.integers(0, 2000),
)
@settings(FUZZ, max_examples=300)
def test_generated_json_never_escapes(lattice, sites, depth):
    text = json.dumps({"lattice": lattice, "sites": sites})
    check_answer(text, "fuzz.json")
    check_answer("[" * depth + "{" + "]" * depth, "deep.json")


def test_every_truncation_point_of_an_example_is_answered():
    data = EXAMPLES["lifepo4_olivine.cif"]
    for cut in range(0, len(data), max(1, len(data) // 200)):  # about 200 truncations
        check_answer(data[:cut], "lifepo4_olivine.cif")
