"""The crystal library: the build script on a tiny input, queries, structures, nearest crystals, the CLI.

Runs on a fresh machine: the shipped library (assets/library/) and, for the build, a tiny JSON Lines
input written here from the example CIFs in assets/examples (never ../shared/data).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sen.cli import main
from sen.io import read_structure
from sen.library import DEFAULT_LIBRARY, Library, LibraryError, file_sha256, parse_query, parse_range

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "assets" / "examples").glob("*.cif"))
MODEL = ROOT / "sen" / "models" / "sen_mp" / "model.pt"
SPLIT = json.loads((ROOT / "sen" / "models" / "sen_mp" / "split.json").read_text())


def _build_module():
    spec = importlib.util.spec_from_file_location("build_library", ROOT / "scripts" / "build_library.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped() -> Library:
    return Library.load()


@pytest.fixture(scope="module")
def predictor():
    from sen.predict import Predictor

    return Predictor.load("sen_mp", device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A library built by scripts/build_library.py from the 19 example CIFs (made-up DFT values)."""
    d = tmp_path_factory.mktemp("tiny_library")
    ids = [f"ex-{p.stem}" for p in EXAMPLES]
    with gzip.open(d / "tiny.jsonl.gz", "wt") as fh:
        for i, (mid, p) in enumerate(zip(ids, EXAMPLES, strict=True)):
            fh.write(json.dumps({"material_id": mid, "band_gap": 0.0 if i % 3 == 0 else 0.5 * i,
                                 "formation_energy_per_atom": -0.1 * i, "cif": p.read_text()}) + "\n")  # fmt: skip
    split = {"seed": 0, "train": ids[:11], "val": ids[11:14], "test": ids[14:18]}  # ids[18]: in no split
    (d / "split.json").write_text(json.dumps(split))
    build = _build_module()
    args = ["--data", str(d / "tiny.jsonl.gz"), "--split", str(d / "split.json"), "--out", str(d / "lib.parquet"),
            "--work", str(d / "work"), "--chunk", "8", "--dims", "4"]  # fmt: skip
    assert build.main(args) == 0
    return {"dir": d, "ids": ids, "split": split, "args": args, "build": build, "library": Library.load(d / "lib.parquet")}


# ----------------------------------------------------------------------------- the build


def test_build_tiny_library(tiny, predictor):
    lib, ids = tiny["library"], tiny["ids"]
    assert len(lib) == len(EXAMPLES) == 19
    assert list(lib.frame["material_id"]) == ids
    labels = dict(zip(lib.frame["material_id"], lib.frame["split"], strict=True))
    assert [labels[m] for m in ids] == ["train"] * 11 + ["validation"] * 3 + ["test"] * 4 + ["none"]
    assert lib.model_sha256 == file_sha256(MODEL)
    assert lib.embeddings.shape == (19, 4) and np.isfinite(lib.embeddings).all()
    assert lib.threshold is not None and lib.threshold > 0
    # the stored predictions are the model's (the build's one pass gives what predict gives)
    structures = [read_structure(p) for p in EXAMPLES[:5]]
    for s, mid, pred in zip(structures, ids[:5], predictor.predict(structures), strict=True):
        row = lib.get(mid)
        assert row["pred_band_gap"] == pytest.approx(pred["band_gap"], abs=1e-4)
        assert row["pred_formation_energy_per_atom"] == pytest.approx(pred["formation_energy_per_atom"], abs=1e-4)
        assert row["pred_band_gap_std"] == pytest.approx(pred["band_gap_std"], abs=1e-4)
        assert row["space_group_number"] == pred["space_group_number"]
        assert row["formula"] == s.composition.reduced_formula
    assert lib.get("ex-nacl_rocksalt")["crystal_system"] == "cubic"
    assert lib.get("ex-lifepo4_olivine")["elements"] == "Fe Li O P"


def test_build_resumes_and_refuses_another_input(tiny, capsys):
    build, args = tiny["build"], tiny["args"]
    before = pq.read_table(tiny["dir"] / "lib.parquet").drop_columns(["embedding"])
    capsys.readouterr()
    assert build.main(args) == 0  # every chunk is there: nothing is predicted again
    out = capsys.readouterr().out
    assert "chunk " not in out and "wrote" in out
    assert pq.read_table(tiny["dir"] / "lib.parquet").drop_columns(["embedding"]).equals(before)
    with pytest.raises(SystemExit, match="another input"):
        build.main([*args[:-4], "--chunk", "5", "--dims", "4"])


def test_structure_round_trip_exact(tiny):
    lib = tiny["library"]
    for mid, path in zip(tiny["ids"], EXAMPLES, strict=True):
        original, rebuilt = read_structure(path), lib.structure(mid)
        assert np.array_equal(rebuilt.lattice.matrix, original.lattice.matrix)
        assert [s.specie.Z for s in rebuilt] == [s.specie.Z for s in original]
        assert np.abs(rebuilt.frac_coords - original.frac_coords).max() <= 1e-6


def test_frac_storage_is_exact_near_one():
    """int32 multiples of 1e-7 keep coordinates near 1 to 5e-8 (float32 would be off by up to 6e-8 there, and
    by more for cartesian coordinates); the check the build relies on."""
    from sen.library import FRAC_SCALE

    frac = np.array([0.99999987654321, 0.5, 1e-9, 0.333333333333, 0.999999999])
    stored = np.rint(frac * FRAC_SCALE).astype(np.int32)
    assert np.abs(stored / FRAC_SCALE - frac).max() <= 5e-8


# ----------------------------------------------------------------------------- the shipped library


def test_shipped_library_is_of_the_shipped_model(shipped):
    """Fails when sen_mp's weights change and the library is not rebuilt (python scripts/build_library.py)."""
    assert shipped.model_sha256 == file_sha256(MODEL), "rebuild the library: python scripts/build_library.py"
    shipped.check_model()
    assert DEFAULT_LIBRARY.stat().st_size <= 15_000_000
    assert sum(f.stat().st_size for f in DEFAULT_LIBRARY.parent.iterdir()) <= 15_000_000
    assert len(shipped) == 33_064


def test_check_model_refuses_other_weights(shipped, tmp_path):
    other = tmp_path / "model.pt"
    other.write_bytes(MODEL.read_bytes() + b"another version")
    with pytest.raises(LibraryError, match="rebuild"):
        shipped.check_model(other)


def test_split_labels(shipped):
    for key, label in (("train", "train"), ("val", "validation"), ("test", "test")):
        for mid in SPLIT[key][:3]:
            assert shipped.get(mid)["split"] == label
    in_split = set(SPLIT["train"]) | set(SPLIT["val"]) | set(SPLIT["test"])
    none = shipped.frame[shipped.frame["split"] == "none"]["material_id"]
    assert len(none) == 33_064 - len(in_split) and not set(none) & in_split
    assert shipped.get("mp-19017")["split"] == "train"


def test_stored_structure_and_prediction_agree(shipped, predictor):
    """A stored structure, predicted again, gives the stored prediction: structures and predictions belong together."""
    ids = ["mp-19017", SPLIT["test"][0], SPLIT["val"][0]]
    structures = [shipped.structure(m) for m in ids]
    for mid, pred in zip(ids, predictor.predict(structures), strict=True):
        row = shipped.get(mid)
        assert row["pred_formation_energy_per_atom"] == pytest.approx(pred["formation_energy_per_atom"], abs=1e-4)
        assert row["pred_band_gap"] == pytest.approx(pred["band_gap"], abs=1e-4)
    lifepo4 = shipped.structure("mp-19017")
    assert lifepo4.composition.reduced_formula == "LiFePO4" and len(lifepo4) == shipped.get("mp-19017")["n_atoms"]


def test_queries(shipped):
    f = shipped.frame
    rows = shipped.search("LiFePO4")
    assert len(rows) >= 1 and set(rows["formula"]) == {"LiFePO4"} and "mp-19017" in set(rows["material_id"])
    assert len(shipped.search(formula="Fe4O6")) == (f["formula"] == "Fe2O3").sum() > 0
    contains = shipped.search("Li Fe P O")
    expected = f[f["elements"].map(lambda e: {"Li", "Fe", "P", "O"} <= set(e.split()))]
    assert list(contains["material_id"]) == list(expected["material_id"]) and len(expected) > 1
    only = shipped.search("Li Fe P O", only=True)
    assert len(only) < len(contains) and all(set(e.split()) == {"Li", "Fe", "P", "O"} for e in only["elements"])
    assert len(shipped.search("O", only=True)) == (f["elements"] == "O").sum()
    by_number, by_symbol = shipped.search(spacegroup=225), shipped.search(spacegroup="Fm-3m")
    assert list(by_number["material_id"]) == list(by_symbol["material_id"]) and len(by_number) > 100
    cubic = shipped.search(system="cubic")
    assert set(cubic["space_group_number"]) <= set(range(195, 231)) and len(cubic) == (f["crystal_system"] == "cubic").sum()
    gap = shipped.search(gap="1:3")
    assert gap["band_gap"].between(1, 3).all() and len(gap) == f["band_gap"].between(1, 3).sum()
    assert (shipped.search(fe=":-3")["formation_energy_per_atom"] <= -3).all()
    metals, insulators = shipped.search(metal=True), shipped.search(metal=False)
    assert (metals["band_gap"] == 0).all() and (insulators["band_gap"] > 0).all()
    assert len(metals) + len(insulators) == len(f)
    combined = shipped.search("Li Fe P O", gap=(1, 3), system="orthorhombic", limit=3)
    assert len(combined) <= 3 and combined["band_gap"].between(1, 3).all()


def test_query_errors_are_one_line():
    for text, message in (("1:x", "malformed"), ("3:1", "lower end"), ("13", "A:B")):
        with pytest.raises(LibraryError, match=message):
            parse_range(text)
    assert parse_range("1:") == (1.0, math.inf) and parse_range(":0.5") == (-math.inf, 0.5)
    assert parse_query("li fe p o") == ("elements", ["Li", "Fe", "P", "O"])
    assert parse_query("Fe") == ("elements", ["Fe"]) and parse_query("Fe4O6") == ("formula", "Fe2O3")
    for bad in ("Xx Fe", "<script>", "Li2Q"):
        with pytest.raises(LibraryError):
            parse_query(bad)


def test_unknown_id_and_filters(shipped):
    with pytest.raises(LibraryError, match="no crystal 'mp-0'"):
        shipped.get("mp-0")
    with pytest.raises(LibraryError, match="crystal system"):
        shipped.search(system="cubical")
    with pytest.raises(LibraryError, match="between 1 and 230"):
        shipped.search(spacegroup=231)
    with pytest.raises(LibraryError, match="space group"):
        shipped.search(spacegroup="Fm3x")


def test_nearest_of_a_library_crystal_is_itself(shipped, predictor):
    near = shipped.nearest("mp-19017", k=5)
    assert near.rows["material_id"].iloc[0] == "mp-19017" and near.rows["distance"].iloc[0] == 0.0
    assert len(near.rows) == 5 and near.rows["distance"].is_monotonic_increasing and near.warning is None
    assert shipped.nearest("mp-19017", k=5, exclude="mp-19017").rows["material_id"].iloc[0] != "mp-19017"
    # from the structure, embedded by the model: itself again, at a distance that is float noise
    mid = SPLIT["test"][0]
    near = shipped.nearest(shipped.structure(mid), k=3, predictor=predictor)
    assert near.rows["material_id"].iloc[0] == mid
    assert near.rows["distance"].iloc[0] < 1e-3 * shipped.threshold
    row = shipped.get(mid)
    assert near.rows["error_band_gap"].iloc[0] == pytest.approx(row["pred_band_gap"] - row["band_gap"])


def test_nearest_warns_outside_the_domain(shipped):
    far = shipped.embeddings[np.isfinite(shipped.embeddings).all(1)].mean(0) + 3 * shipped.threshold
    near = shipped.nearest(far, k=2)
    assert near.out_of_domain and "trust the prediction less" in near.warning
    assert near.nearest_distance > shipped.threshold


def test_embed_matches_both_paths_and_projection(shipped, predictor):
    from sen.stacked import MAX_EDGE_ROWS

    structures = [read_structure(ROOT / "assets" / "examples" / f) for f in ("nacl_rocksalt.cif", "cu_fcc.cif")]
    graphs, _ = predictor._graphs(structures)
    assert 6 * sum(len(g.edge_src) for g in graphs) <= MAX_EDGE_ROWS  # small: the six networks run together
    stacked = predictor.embed(structures)
    assert stacked.shape == (2, 6 * 3 * 64) and stacked.dtype == np.float32
    saved, predictor.stacked = predictor.stacked, None  # the networks one after the other: the same features
    try:
        assert np.allclose(predictor.embed(structures), stacked, atol=1e-4)
    finally:
        predictor.stacked = saved
    assert shipped.project(stacked).shape == (2, shipped.embeddings.shape[1])


# ----------------------------------------------------------------------------- the CLI


def test_cli_search(shipped, capsys):
    assert main(["library", "search", "Li Fe P O", "--gap", "1:3", "--format", "json", "--limit", "0"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(1 <= r["dft_gap_eV"] <= 3 for r in rows)
    assert len(rows) == len(shipped.search("Li Fe P O", gap="1:3"))
    assert main(["library", "search", "LiFePO4", "--spacegroup", "62", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("id,formula") and "mp-19017,LiFePO4,Pnma (62)" in out
    assert main(["library", "search", "Fe O", "--only", "--insulator", "--limit", "2"]) == 0
    captured = capsys.readouterr()
    n = len(shipped.search("Fe O", only=True, metal=False))
    assert n > 2 and len(captured.out.strip().splitlines()) == 3
    assert f"{n:,} of 33,064 crystals match; the first 2 shown" in captured.err


def test_cli_show_and_nearest(capsys):
    assert main(["library", "show", "mp-19017"]) == 0
    out = capsys.readouterr().out
    assert "LiFePO4" in out and "training crystal" in out and "nearest known crystals" in out
    assert main(["library", "show", "mp-19017", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["material_id"] == "mp-19017" and len(doc["nearest"]) == 5 and len(doc["structure"]["species"]) == 28
    assert main(["library", "nearest", str(ROOT / "assets" / "examples" / "lifepo4_olivine.cif"), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5 and rows[0]["distance"] <= rows[-1]["distance"]


def test_cli_errors_are_one_line(capsys):
    for argv, message in ((["library", "show", "mp-0"], "no crystal 'mp-0'"),
                          (["library", "search", "Fe", "--gap", "1:x"], "malformed band-gap range '1:x'"),
                          (["library", "search", "Qq Fe"], "not an element"),
                          (["library", "nearest", "/nonexistent.cif"], "error:")):  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_cli_import_stays_light():
    code = "import sys; from sen.cli import main; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'duckdb') or m == 'sen.library'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- the app panel


def test_panel_data(shipped):
    from app import library_panel as panel

    test_id = SPLIT["test"][0]
    data = panel.card_data(shipped, test_id)
    row = shipped.get(test_id)
    assert data["is_test"] and data["split_note"].startswith("test crystal")
    gap = next(t for t in data["targets"] if t["target"] == "band_gap")
    assert gap["dft"] == pytest.approx(row["band_gap"], abs=1e-4)
    assert gap["error"] == pytest.approx(row["pred_band_gap"] - row["band_gap"], abs=1e-4)
    assert panel.card_data(shipped, "mp-19017")["split_note"] == "training crystal: the model was fitted to it, so this is not a test"
    filters = panel.filters_from("Li Fe P O", gap=(1.0, 3.0), kind="insulator")
    pts = panel.parity_points(shipped, filters, "formation_energy_per_atom")
    expected = shipped.search("Li Fe P O", gap=(1, 3), metal=False, split="test")
    assert list(pts["material_id"]) == list(expected["material_id"]) and len(pts) > 0
    fig = panel.parity_figure(shipped, filters, "formation_energy_per_atom")
    mae = np.abs(expected["pred_formation_energy_per_atom"] - expected["formation_energy_per_atom"]).mean()
    assert f"{len(pts):,} test crystals, MAE {mae:.3f} eV/atom" in fig.layout.title.text
    everything = panel.parity_points(shipped, {}, "band_gap")
    assert len(everything) == (shipped.frame["split"] == "test").sum()
    table, warning = panel.nearest_frame(shipped, "mp-19017", exclude="mp-19017")
    assert len(table) == 5 and "mp-19017" not in set(table["id"]) and table["open"].iloc[0].startswith("?crystal=mp-")
    assert panel.crystal_file(shipped, "mp-19017").name == "mp-19017.json"
    assert read_structure(panel.crystal_file(shipped, "mp-19017").data, filename="mp-19017.json").composition.reduced_formula == "LiFePO4"


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "tests" / "library_app_script.py"), default_timeout=180)


def test_app_opens_a_linked_crystal():
    at = _app()
    at.query_params["crystal"] = "mp-19017"
    at.run()
    assert not at.exception
    assert [h.value for h in at.header] == ["mp-19017 LiFePO4"]
    assert any("Training crystal" in w.value and "not a test" in w.value for w in at.warning)
    labels = [m.label for m in at.metric]
    assert labels.count("DFT (Materials Project)") == 2 and labels.count("SEN") == 2
    assert any(len(d.value) == 5 and "distance" in d.value.columns for d in at.dataframe)  # nearest crystals
    assert len(at.get("plotly_chart")) == 2


def test_app_search_filters_and_escapes(shipped):
    at = _app()
    at.run()
    at.sidebar.text_input[0].input("Li Fe P O").run()
    n = len(shipped.search("Li Fe P O"))
    assert f"{n:,} of 33,064 crystals match." in [c.value for c in at.sidebar.caption]
    assert len(at.dataframe[0].value) == n
    at.sidebar.selectbox[0].select("cubic").run()
    assert len(at.dataframe[0].value) == len(shipped.search("Li Fe P O", system="cubic"))
    at.sidebar.text_input[0].input("<b>x</b> Fe").run()
    assert not at.exception
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1 and "\\<b\\>x\\</b\\>" in errors[0]
