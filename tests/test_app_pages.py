"""The page shows the right numbers and the right crystal: the batch table against Predictor.predict,
the newest upload in detail, batch limits, the spglib standard setting, unique orbit names, the
single-orbit information number, atom labels and the server's torch threads (AppTest, shipped model).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import results  # noqa: E402
from app.gallery import load_gallery  # noqa: E402
from app.results import CrystalFile, predict_files, symmetry_view  # noqa: E402
from app.routing_panel import bits, information_text  # noqa: E402
from sen import Predictor, read_structure  # noqa: E402
from sen.predict import DEFAULT_MODEL, MODELS_DIR  # noqa: E402

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file(), reason="no shipped weights"),
]
APP = str(ROOT / "app" / "Home.py")
EXAMPLES = ROOT / "assets" / "examples"



def crystal_subheaders(at) -> list[str]:
    """The subheaders naming a crystal (the page's fixed section titles left out)."""
    fixed = {"Known crystals", "Nearest known crystals", "How well does the model do here?"}
    return [s.value for s in at.subheader if s.value not in fixed]


def batch_tables(at) -> list:
    """The several-files tables on the page (other tables, such as the networks' routing, have no file column)."""
    return [d for d in at.dataframe if "file" in d.value.columns]

def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def example_bytes(name: str) -> tuple[str, bytes, str]:
    return name, (EXAMPLES / name).read_bytes(), "chemical/x-cif"


def pick(at: AppTest, file: str) -> AppTest:
    index = next(i for i, e in enumerate(load_gallery()) if e.file == file)
    at.sidebar.selectbox(key="example").set_value(index).run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def scene(at: AppTest) -> dict:
    """What the page handed to its 3D view (app/viewer.py's scene)."""
    return json.loads(at.get("component_instance")[0].proto.json_args)["scene"]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


# ---------------------------------------------------------------------------- several files


def test_table_numbers_are_the_predictions_and_spreads_of_predictor_predict(predictor):
    files = ["nacl_rocksalt.cif", "lifepo4_olivine.cif", "tio2_rutile.cif", "cu_fcc.cif"]
    at = run_app()
    at.sidebar.file_uploader[0].set_value([example_bytes(f) for f in files])
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["file"]) == files
    expected = predictor.predict([read_structure(EXAMPLES / f) for f in files])
    for column, key in [
        ("band gap (eV)", "band_gap"),
        ("band gap ± (eV)", "band_gap_std"),
        ("formation energy (eV/atom)", "formation_energy_per_atom"),
        ("formation energy ± (eV/atom)", "formation_energy_per_atom_std"),
    ]:
        assert list(table[column]) == pytest.approx([row[key] for row in expected], abs=2e-5), column
    assert list(table["metal / insulator"]) == ["metal" if row["is_metal"] else "insulator" for row in expected]
    assert "Predictions for 4 uploaded files" in texts(at.header)


def add_upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    """What the browser's multi-file uploader does with a new choice: the files already there stay,
    with their ids, and the new ones are added (AppTest's own upload() starts from an empty list)."""
    uploader = at.sidebar.file_uploader[0]
    uploader._files = uploader._get_files_to_register()
    for file in files:
        uploader.upload(*file)
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_second_upload_is_shown_not_added_to_a_batch():
    at = add_upload(run_app(), example_bytes("nacl_rocksalt.cif"))
    assert crystal_subheaders(at) == ["nacl\\_rocksalt.cif"] and not batch_tables(at)
    add_upload(at, example_bytes("tio2_rutile.cif"))
    assert len(at.session_state["uploads"]) == 2  # both files are in the uploader
    assert crystal_subheaders(at) == ["tio2\\_rutile.cif"]  # the newest upload, in detail
    assert not batch_tables(at) and "Predictions for" not in texts(at.header)
    inspect = at.sidebar.selectbox(key="inspect_upload")
    assert inspect.options == ["tio2_rutile.cif", "nacl_rocksalt.cif"]  # newest first
    inspect.select_index(1).run()  # the earlier upload can still be looked at
    assert crystal_subheaders(at) == ["nacl\\_rocksalt.cif"]
    # two files chosen at once: they make the table, and the first of them is shown in detail
    add_upload(at, example_bytes("cu_fcc.cif"), example_bytes("fe_bcc.cif"))
    assert list(at.dataframe[0].value["file"]) == ["cu_fcc.cif", "fe_bcc.cif"]
    assert crystal_subheaders(at) == ["cu\\_fcc.cif"]
    assert at.sidebar.selectbox(key="inspect_upload").options[:2] == ["cu_fcc.cif", "fe_bcc.cif"]


def test_more_than_50_files_are_cut_to_50_with_a_message():
    at = run_app()
    data = (EXAMPLES / "cu_fcc.cif").read_bytes()  # same bytes: predicted once, then cached
    at.sidebar.file_uploader[0].set_value([(f"cu_{i:02d}.cif", data, "chemical/x-cif") for i in range(53)])
    at.run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 50
    warning = texts(at.warning)
    assert "3 of 53 files were not predicted: at most 50 files and 5,000 atoms in all per upload" in warning
    assert "cu\\_50.cif, cu\\_51.cif, cu\\_52.cif" in warning


def test_atom_limit_leaves_out_the_files_after_it(small_config):
    tiny = Predictor.untrained(small_config, seed=0)
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    files = [CrystalFile.from_bytes(f"{i}.cif", str(CifWriter(nacl)).encode()) for i in range(4)]  # 8 atoms each
    result = predict_files(files, tiny, max_atoms=20)
    assert [r["file"] for r in result.records] == ["0.cif", "1.cif"]
    assert result.left_out == ["2.cif", "3.cif"] and "20 atoms" in result.limit
    result = predict_files(files, tiny, max_files=3)
    assert len(result.records) == 3 and result.left_out == ["3.cif"]


# ---------------------------------------------------------------------------- symmetry panel


def test_lattice_table_is_the_standard_setting_of_the_letters_and_the_cif():
    at = pick(run_app(), "lifepo4_olivine.cif")
    lattice = at.table[0].value
    assert list(lattice.columns) == ["parameter", "cell as given", "conventional standard cell"]
    standard = dict(zip(lattice["parameter"], lattice["conventional standard cell"], strict=True))
    assert (standard["a (Å)"], standard["b (Å)"], standard["c (Å)"]) == ("10.3320", "6.0100", "4.6920")
    assert standard["volume (Å³)"] == "291.35" and standard["atoms"] == "28"
    assert any(b.proto.label == "Standardised cell (CIF)" for b in at.get("download_button"))
    # the downloadable CIF is written from this same cell
    view = symmetry_view(CrystalFile.from_path(EXAMPLES / "lifepo4_olivine.cif"), 0.01, 5.0)
    downloaded = read_structure(view.standard_cif, filename="standard.cif")
    assert [round(x, 3) for x in downloaded.lattice.abc] == [10.332, 6.01, 4.692]


def test_wyckoff_table_numbers_orbits_that_share_a_label():
    at = pick(run_app(), "lifepo4_olivine.cif")
    orbits = list(at.table[1].value["orbit"])
    assert orbits.count("O 4c (1)") == orbits.count("O 4c (2)") == 1 and "O 4c" not in orbits
    assert len(set(orbits)) == len(orbits)
    pick(at, "al2sio5_kyanite.cif")
    orbits = list(at.table[1].value["orbit"])
    assert [o for o in orbits if o.startswith("Al 2i")] == [f"Al 2i ({k})" for k in range(1, 5)]
    # the same names as the orbit chart's rows
    orbit_chart = at.get("plotly_chart")[1].proto.spec
    assert all(f"Al 2i ({k}) (2 atoms)" in orbit_chart for k in range(1, 5))


def test_one_orbit_crystal_says_the_information_is_not_informative():
    at = pick(run_app(), "cu_fcc.cif")
    values = {m.label: m.value for m in at.metric}
    assert values["Orbit ↔ dominant capsule information"] == "not informative (one orbit)"
    assert "-0.00" not in "\n".join(str(m.value) for m in at.metric)
    assert information_text(0.9183, 1.3710, 3) == "0.92 of 1.37 bits"
    assert bits(-0.0) == bits(-1e-12) == "0.00"


# ---------------------------------------------------------------------------- 3D view


def labels(view: dict) -> list[str]:
    return [text for text, _ in view["labels"]]


def test_labels_on_every_drawn_atom_of_a_supercell():
    at = run_app()
    for axis in "abc":
        at.sidebar.number_input(key=f"supercell_{axis}").set_value(2)
    at.sidebar.checkbox(key="label_atoms").check().run()
    view = scene(at)
    atom_labels = labels(view)
    assert len(atom_labels) == 27 + 8 + 3 * 12  # every drawn atom of the 2x2x2 SrTiO3
    assert atom_labels.count("Sr 1a") == 27 and atom_labels.count("Ti 1b") == 8
    assert view["labelStyle"]["inFront"] is True and "screenOffset" in view["labelStyle"]
    assert "Every drawn atom is labelled" in texts(at.caption)
    for axis in "abc":
        at.sidebar.number_input(key=f"supercell_{axis}").set_value(3)
    at.run()
    atom_labels = labels(scene(at))
    assert len(atom_labels) == 27 * 3  # 208 atoms drawn: one label per orbit and cell
    assert "one atom of each orbit is labelled in each cell" in texts(at.caption)


# ---------------------------------------------------------------------------- threads


def test_server_threads_come_from_sen_threads(monkeypatch):
    monkeypatch.delenv("SEN_THREADS", raising=False)
    assert results.server_threads() == 1
    for value, threads in [("3", 3), ("auto", None), ("0", None), ("many", 1), ("-2", 1)]:
        monkeypatch.setenv("SEN_THREADS", value)
        assert results.server_threads() == threads, value
