"""The Streamlit app's main flows, run in-process with streamlit.testing (AppTest).

The app uses the shipped model (models/sen_mp); tests never depend on its predicted values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import viewer  # noqa: E402
from app.common import literal  # noqa: E402
from app.gallery import DEFAULT_EXAMPLE, load_gallery  # noqa: E402
from app.results import (  # noqa: E402
    CrystalFile,
    coverage_warnings,
    model_test_mae,
    predict_files,
    prediction_record,
    read_crystal,
    records_csv,
    routing_csv,
    routing_data,
    spread_warning,
    symmetry_view,
    unique_orbit_names,
)
from app.viewer import CDN_3DMOL_URL  # noqa: E402
from sen.errors import StructureError  # noqa: E402
from sen.io import read_structure  # noqa: E402
from sen.predict import DEFAULT_MODEL, MODELS_DIR, Predictor  # noqa: E402
from sen.symmetry import analyze_symmetry  # noqa: E402

pytestmark = pytest.mark.timeout(300)

APP = str(ROOT / "app" / "Home.py")
HAS_MODEL = (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file()  # MODELS_DIR honours SEN_MODELS_DIR
needs_model = pytest.mark.skipif(not HAS_MODEL, reason=f"no weights at {MODELS_DIR / DEFAULT_MODEL}")


def rocksalt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def rutile() -> Structure:
    return Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.3053, 0.3053, 0]]
    )


def distorted_perovskite(shift: float = 0.01) -> Structure:
    """SrTiO3 with Ti moved off centre by ``shift`` (fractional, 0.01 = 0.039 Å) along c."""
    coords = [[0, 0, 0], [0.5, 0.5, 0.5 + shift], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"], coords)


def cif_bytes(structure: Structure) -> bytes:
    return str(CifWriter(structure)).encode()


def poscar_bytes(structure: Structure) -> bytes:
    return Poscar(structure).get_str().encode()


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


SECTION_SUBHEADERS = {"Known crystals", "Nearest known crystals", "How well does the model do here?"}


def crystal_subheaders(at: AppTest) -> list[str]:
    """The subheaders naming a crystal (the page's fixed section titles left out)."""
    return [s.value for s in at.subheader if s.value not in SECTION_SUBHEADERS]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def view_json(at: AppTest) -> str:
    """What the page handed to its one 3D view (app/viewer.py's scene, as JSON text)."""
    views = at.get("component_instance")
    assert len(views) == 1
    return views[0].proto.json_args


def scene(at: AppTest) -> dict:
    return json.loads(view_json(at))["scene"]


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    at.sidebar.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    assert not at.exception, at.exception
    return at


def assert_complete(at: AppTest, title: str) -> None:
    """Prediction cards, symmetry, 3D view, routing charts, downloads and the footer are all there."""
    labels = [m.label for m in at.metric]
    if HAS_MODEL:
        assert {"Band gap", "Formation energy", "Metal or insulator"} <= set(labels)
        assert len(at.get("plotly_chart")) == 5 + 2  # five routing charts, two parity plots of the library
        values = {m.label: m.value for m in at.metric}
        assert values["Band gap"].endswith(" eV") and values["Formation energy"].endswith(" eV/atom")
        assert values["Metal or insulator"] in ("Metal", "Insulator")
    assert "Space group" in texts(at.markdown)
    assert "Wyckoff orbits" in texts(at.markdown)
    assert scene(at)["js"] in ("/app/static/3Dmol-min.js", CDN_3DMOL_URL)
    assert f"Page complete: {literal(title)}" in texts(at.caption)
    assert len(at.get("download_button")) == (5 if HAS_MODEL else 1)


# ---------------------------------------------------------------------------- flows


@needs_model
def test_default_gallery_pick_shows_complete_result():
    at = run_app()
    gallery = load_gallery()
    default = next(e for e in gallery if e.file == DEFAULT_EXAMPLE)
    assert at.sidebar.selectbox[0].format_func(at.sidebar.selectbox[0].value) == default.label
    assert crystal_subheaders(at) == [default.name]
    assert not at.error
    assert_complete(at, default.name)
    assert "Pm-3m" in texts(at.markdown)
    assert "Source: " in texts(at.sidebar.caption)  # the gallery crystal's source is shown
    assert scene(at)["js"] == "/app/static/3Dmol-min.js"  # npm ci has put 3Dmol.js in app/static


@needs_model
def test_picking_another_gallery_crystal_updates_everything():
    at = run_app()
    gallery = load_gallery()
    index = next(i for i, e in enumerate(gallery) if e.file == "nacl_rocksalt.cif")
    before = view_json(at)
    at.sidebar.selectbox[0].set_value(index).run()
    assert not at.exception
    assert crystal_subheaders(at) == [gallery[index].name]
    assert "Fm-3m" in texts(at.markdown)
    assert view_json(at) != before and scene(at)["name"] == "NaCl (rock salt)"
    assert_complete(at, gallery[index].name)


@needs_model
def test_upload_of_a_good_file():
    at = upload(run_app(), ("POSCAR_rutile", poscar_bytes(rutile())))
    assert crystal_subheaders(at) == [literal("POSCAR_rutile")]  # Markdown source
    assert "P4\\_2/mnm" in texts(at.markdown)  # Markdown-escaped P4_2/mnm
    assert not at.error
    assert_complete(at, "POSCAR_rutile")
    # the user can go back to the gallery crystal without removing the upload
    at.sidebar.radio(key="show_source").set_value("Example crystal").run()
    assert "Pm-3m" in texts(at.markdown)


@needs_model
def test_upload_of_a_bad_file_shows_the_reason_and_the_page_keeps_working():
    at = upload(run_app(), ("broken.cif", b"data_broken\n_cell_length_a 5.0\nthis is not a crystal\n"))
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("broken.cif: ")
    assert "Traceback" not in errors[0]
    assert "Showing the example crystal" in texts(at.info)
    assert_complete(at, "SrTiO3 (cubic perovskite)")
    # still interactive: another colour mode re-renders without errors
    at.sidebar.radio(key="colour_mode").set_value("Wyckoff orbit").run()
    assert not at.exception and "O 3c" in view_json(at)


@needs_model
def test_several_files_give_a_table_and_list_bad_files():
    files = [
        ("NaCl.cif", cif_bytes(rocksalt())),
        ("rutile.vasp", poscar_bytes(rutile())),
        ("empty.cif", b""),
    ]
    at = upload(run_app(), *files)
    table = at.dataframe[0].value
    assert list(table["file"]) == ["NaCl.cif", "rutile.vasp"]
    columns = {"band gap (eV)", "band gap ± (eV)", "formation energy (eV/atom)", "formation energy ± (eV/atom)"}
    assert columns | {"metal / insulator", "space group"} <= set(table.columns)
    assert list(table["space group"]) == ["Fm-3m (225)", "P4_2/mnm (136)"]
    assert [e.value for e in at.error] == [
        "empty.cif: file is empty; upload a CIF, POSCAR, extended XYZ or pymatgen JSON file"
    ]
    assert len(at.get("progress")) == 1
    assert any(b.proto.label == "All predictions (CSV)" for b in at.get("download_button"))
    # the first file of the upload is shown in detail; another one can be picked
    assert crystal_subheaders(at) == ["NaCl.cif"]
    inspect = at.sidebar.selectbox(key="inspect_upload")
    inspect.select_index(inspect.options.index("rutile.vasp")).run()
    assert crystal_subheaders(at) == ["rutile.vasp"]


@needs_model
def test_tolerance_changes_the_space_group_of_a_slightly_distorted_crystal():
    at = upload(run_app(), ("distorted_SrTiO3.cif", cif_bytes(distorted_perovskite())))
    assert "P4mm" in texts(at.markdown) and "Pm-3m" not in texts(at.markdown)
    at.sidebar.number_input(key="symprec").set_value(0.1).run()
    assert not at.exception
    assert "Pm-3m" in texts(at.markdown)
    # the network keeps its own tolerance, and the page says so
    assert "the network was given P4mm" in texts(at.info)
    at.sidebar.number_input(key="symprec").set_value(0.001).run()
    assert "P4mm" in texts(at.markdown)
    assert not at.info


@needs_model
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("Element", [["Sr", "Ti", "O"]]),
        ("Wyckoff orbit", [["Sr 1a", "Ti 1b", "O 3c"]]),
        ("Dominant capsule", [["capsule "]]),
        ("Orbit | capsule side by side", [["Sr 1a", "Ti 1b", "O 3c"], ["capsule "]]),
    ],
)
def test_colour_modes(mode, expected):
    at = run_app()
    at.sidebar.radio(key="colour_mode").set_value(mode).run()
    assert not at.exception and not at.error
    views = scene(at)["views"]
    assert len(views) == len(expected)  # side by side: two linked views
    for view, wanted in zip(views, expected, strict=True):
        legend = [label for label, _ in view["legend"]]
        assert all(any(label.startswith(w) for label in legend) for w in wanted), legend


@needs_model
def test_supercell_and_labels_change_the_view():
    at = run_app()
    one = scene(at)
    for axis in "abc":
        at.sidebar.number_input(key=f"supercell_{axis}").set_value(2)
    at.sidebar.checkbox(key="label_atoms").check().run()
    many = scene(at)
    n_one = int(one["xyz"].split("\n", 1)[0])
    n_many = int(many["xyz"].split("\n", 1)[0])
    # Sr on the 8 corners, Ti once, each O on two opposite faces
    assert n_one == 8 + 1 + 3 * 2
    # 2x2x2: Sr on a 3x3x3 grid, Ti 8 times, each O on 3 x 2 x 2 sites
    assert n_many == 27 + 8 + 3 * 12
    assert "O 3c" in [text for text, _ in many["labels"]]


@needs_model
def test_script_in_an_uploaded_cif_never_reaches_the_page():
    payload = "</script><script>alert(1)</script>"
    cif = str(CifWriter(rocksalt())).replace("data_NaCl", "data_x" + payload.replace(" ", ""))
    cif = f"# {payload}\n" + cif + f"_chemical_name_common '{payload}'\n"
    at = upload(run_app(), ("evil.cif", cif.encode()))
    assert not at.error, [e.value for e in at.error]
    page = view_json(at)  # the view gets a scene built from coordinates and element symbols only
    assert "alert(1)" not in page and "<script" not in page


# ---------------------------------------------------------------------------- the functions behind the flows


@pytest.fixture(scope="module")
def tiny_predictor(small_config) -> Predictor:
    return Predictor.untrained(small_config, seed=0)


def test_reading_an_upload_gives_sen_io_reasons():
    good = CrystalFile.from_bytes("NaCl.cif", cif_bytes(rocksalt()))
    assert len(read_crystal(good)) == 8 and len(good.digest) == 64
    with pytest.raises(StructureError, match="empty"):
        read_crystal(CrystalFile.from_bytes("empty.cif", b"   "))
    with pytest.raises(StructureError, match="binary"):
        read_crystal(CrystalFile.from_bytes("x.cif", b"\x00\x01\x02 data"))


def test_standardised_cif_reads_back_with_the_same_symmetry():
    crystal = CrystalFile.from_bytes("rutile.vasp", poscar_bytes(rutile()))
    view = symmetry_view(crystal, 0.01, 5.0)
    assert view.report.space_group_number == 136
    again = read_structure(view.standard_cif, filename="standard.cif")
    assert analyze_symmetry(again).space_group_number == 136 and len(again) == 6
    assert [row["cell"] for row in view.lattice_rows] == ["cell as given", "conventional standard cell"]
    assert view.lattice_rows[1]["c (Å)"] == "2.9590"


def test_predict_files_reports_each_failure(tiny_predictor):
    files = [
        CrystalFile.from_bytes("a.cif", cif_bytes(rocksalt())),
        CrystalFile.from_bytes("b.xyz", b"2\nno lattice\nH 0 0 0\nH 0 0 0.74\n"),
        CrystalFile.from_bytes("POSCAR", poscar_bytes(rutile())),
    ]
    seen = []
    result = predict_files(files, tiny_predictor, lambda done, total, name: seen.append((done, total)))
    records, failures = result.records, result.failures
    assert [r["file"] for r in records] == ["a.cif", "POSCAR"]
    assert failures[0][0] == "b.xyz" and "no lattice" in failures[0][1]
    assert seen == [(1, 2), (2, 2)]  # the file that cannot be read is not predicted
    assert result.left_out == [] and result.limit == ""
    csv_text = records_csv(records)
    header = csv_text.splitlines()[0].split(",")
    assert "band_gap_eV" in header and "formation_energy_per_atom_eV_per_atom" in header
    assert len(csv_text.splitlines()) == 3


def test_prediction_record_carries_units_and_test_mae(tiny_predictor):
    crystal = CrystalFile.from_bytes("NaCl.cif", cif_bytes(rocksalt()))
    structure = read_crystal(crystal)
    prediction = tiny_predictor.predict(structure)[0]
    tiny_predictor.card = {"targets": {"band_gap": {"test_mae": 0.25}, "formation_energy_per_atom": {}}}
    record = prediction_record(crystal, structure, prediction, tiny_predictor)
    assert record["band_gap_test_mae_eV"] == 0.25
    assert record["formation_energy_per_atom_test_mae_eV_per_atom"] is None
    assert record["space_group_number"] == 225 and record["n_atoms"] == 8
    assert json.loads(json.dumps(record)) == record


def test_test_mae_and_coverage_warnings_tolerate_missing_keys():
    assert model_test_mae({}, "band_gap") is None
    assert model_test_mae({"targets": {"band_gap": {"test_mae": "nan"}}}, "band_gap") is None
    assert model_test_mae({"targets": {"band_gap": {"test_mae": 0.3}}}, "band_gap") == 0.3
    structure = rocksalt()
    assert coverage_warnings(structure, {}) == []
    assert coverage_warnings(structure, {"training_elements": ["Na", "Cl"], "max_atoms_in_training": 8}) == []
    notes = coverage_warnings(structure, {"training_elements": ["Na", "O"], "max_atoms_in_training": 4})
    assert len(notes) == 2 and notes[0].startswith("Cl never appeared") and "8 atoms" in notes[1]


def test_spread_warning_only_when_an_ensemble_disagrees_more_than_on_the_test_set():
    spread = {"high_spread_threshold": 0.05, "mae_above_threshold": 0.15, "mae_below_threshold": 0.04,
              "high_spread_quantile": 0.9}  # fmt: skip
    card = {"targets": {"formation_energy_per_atom": {"spread": spread}}}
    target = "formation_energy_per_atom"
    note = spread_warning(card, target, {target: -1.0, f"{target}_std": 0.08}, 3)
    assert note.startswith("The 3 networks disagree on the formation energy")
    assert "± 0.080 eV/atom" in note and "90%" in note and "0.150 eV/atom" in note and "0.040 eV/atom" in note
    assert spread_warning(card, target, {target: -1.0, f"{target}_std": 0.02}, 3) is None
    assert spread_warning(card, target, {target: -1.0}, 1) is None  # one network: no spread
    assert spread_warning({}, target, {target: -1.0, f"{target}_std": 0.08}, 3) is None  # nothing measured
    assert spread_warning(card, "band_gap", {"band_gap": 1.0, "band_gap_std": 9.0}, 3) is None


def test_prediction_record_carries_the_ensemble_spread(tiny_predictor):
    crystal = CrystalFile.from_bytes("NaCl.cif", cif_bytes(rocksalt()))
    structure = read_crystal(crystal)
    prediction = {**tiny_predictor.predict(structure)[0], "band_gap_std": 0.125, "formation_energy_per_atom_std": 0.5}
    record = prediction_record(crystal, structure, prediction, tiny_predictor)
    assert record["band_gap_std_eV"] == 0.125 and record["formation_energy_per_atom_std_eV_per_atom"] == 0.5
    assert "band_gap_std_eV" not in prediction_record(crystal, structure, tiny_predictor.predict(structure)[0],
                                                      tiny_predictor)  # fmt: skip


def test_routing_data_is_labelled_by_orbit(tiny_predictor):
    structure = rutile()
    explanation = tiny_predictor.explain(structure)
    data = routing_data(structure, explanation, tiny_predictor.targets)
    assert [o["orbit"] for o in data["orbits"]] == ["Ti 2a", "O 4f"]
    assert [a["orbit"] for a in data["atoms"]] == ["Ti 2a"] * 2 + ["O 4f"] * 4
    routing = np.array([a["routing"] for a in data["atoms"]])
    assert np.allclose(routing.sum(1), 1, atol=1e-4)
    assert np.array(data["capsule_attention"]).shape == (data["n_capsules"],) * 2
    rows = routing_csv(data).splitlines()
    assert rows[0].startswith("atom,element,orbit,dominant_capsule,capsule_0") and len(rows) == 7
    json.dumps(data)  # JSON-able as it is


def test_orbit_names_are_unique():
    # two oxygen orbits on the same Wyckoff letter (4c) in olivine-like Pnma is common; build one directly
    s = Structure.from_spacegroup(
        "Pnma",
        Lattice.orthorhombic(10.3, 6.0, 4.7),
        ["Fe", "O", "O"],
        [[0.28, 0.25, 0.97], [0.1, 0.25, 0.74], [0.45, 0.25, 0.2]],
    )
    names = unique_orbit_names(analyze_symmetry(s))
    assert len(set(names)) == len(names) == 3
    assert "O 4c (1)" in names and "O 4c (2)" in names


@needs_model
def test_the_routing_of_every_network_can_be_picked():
    at = run_app()
    picker = next(s for s in at.selectbox if s.label == "Network whose capsules to show")
    assert picker.options[-1] == "network 6 of 6"
    first = at.get("plotly_chart")[0].proto.spec
    picker.set_value(3).run()
    assert not at.exception and not at.error
    assert at.get("plotly_chart")[0].proto.spec != first  # another network's capsules
    assert "routing shown is that of network 3" in texts(at.caption)
    table = next(d for d in at.dataframe if "network" in d.value.columns)
    assert list(table.value["network"]) == [1, 2, 3, 4, 5, 6]


@needs_model
def test_the_3d_view_and_atom_details_follow_the_picked_network():
    at = run_app()
    at.sidebar.radio(key="colour_mode").set_value("Dominant capsule").run()
    first = scene(at)
    assert all("(network 1 of 6)" in site[1][4] for site in first["details"]["sites"])
    at.selectbox(key="routing_network").set_value(4).run()
    assert not at.exception and not at.error
    fourth = scene(at)
    lines = [site[1][4] for site in fourth["details"]["sites"]]
    assert all("(network 4 of 6)" in line for line in lines)
    assert [site[2] for site in fourth["details"]["sites"]] != [site[2] for site in first["details"]["sites"]]
    assert "Routing and dominant capsule of network 4 of 6" in texts(at.caption)
    table = next(d for d in at.dataframe if "site symmetry" in d.value.columns).value
    assert list(table["dominant capsule"]) == [int(line.split()[2]) for line in lines]  # the same network
    colours = {viewer.capsule_colour(int(c)) for c in table["dominant capsule"]}
    assert {colour for _, colour, _ in fourth["views"][0]["styles"]} == colours


@needs_model
@pytest.mark.parametrize(
    ("params", "shown"),
    [({"example": "srtio3_perovskite", "displace": "Ti:0,0,0.1"}, "P4mm (99)"),
     ({"example": "nacl_rocksalt", "substitute": "Na:K"}, "KCl")],
)  # fmt: skip
def test_the_home_page_opens_a_shared_link(params, shown):
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception and not at.error
    page = texts(at.markdown) + texts(at.caption) + texts(at.subheader) + texts(at.header)
    assert shown in page
    assert all(dict(at.query_params).get(k) == v for k, v in params.items())  # the link stays the page's state


@needs_model
def test_a_library_link_opens_the_known_crystal_and_a_gallery_pick_replaces_it():
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["crystal"] = "mp-19017"
    at.run()
    assert not at.exception and not at.error
    assert crystal_subheaders(at)[0].startswith("mp-19017 LiFePO4")
    labels = [m.label for m in at.metric]
    assert "DFT (Materials Project)" in labels and "SEN" in labels
    assert "Nearest known crystals" in [s.value for s in at.subheader]
    assert dict(at.query_params).get("crystal") == "mp-19017"  # the link keeps naming it
    gallery = load_gallery()
    index = next(i for i, e in enumerate(gallery) if e.file == "nacl_rocksalt.cif")
    at.sidebar.selectbox[0].set_value(index).run()  # the visitor changes the gallery: that crystal is shown
    assert not at.exception
    assert crystal_subheaders(at)[0] == gallery[index].name
