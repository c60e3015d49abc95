"""Many files, or one .zip of them, through the screening path (AppTest, shipped model): the table and the
Parquet/CSV downloads hold ``sen screen``'s rows and Predictor.predict's numbers, one row per member; hostile
archives are refused with one line; the per-session limits stop a batch and the detailed view.
"""

from __future__ import annotations

import csv
import io
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import app_test

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from test_app_pages import add_upload, batch_tables, crystal_subheaders, example_bytes, run_app, texts  # noqa: E402

from app import results  # noqa: E402
from app.batch import ArchiveError, archive_members  # noqa: E402
from app.common import literal  # noqa: E402
from app.gallery import default_index, load_gallery  # noqa: E402
from app.results import CrystalFile, SessionWork, SkippedFile, predict_files  # noqa: E402
from sen import Predictor, read_structure  # noqa: E402
from sen.predict import DEFAULT_MODEL, MODELS_DIR  # noqa: E402
from sen.screen import SCREEN_COLUMNS  # noqa: E402

needs_model = pytest.mark.skipif(not (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file(), reason="no shipped weights")
pytestmark = pytest.mark.timeout(300)
EXAMPLES = ROOT / "assets" / "examples"
THREE = ["nacl_rocksalt.cif", "tio2_rutile.cif", "cu_fcc.cif"]
VALUES = {  # table column -> Predictor.predict key, screen column
    "band gap (eV)": ("band_gap", "band_gap_eV"),
    "band gap ± (eV)": ("band_gap_std", "band_gap_std_eV"),
    "formation energy (eV/atom)": ("formation_energy_per_atom", "formation_energy_eV_per_atom"),
    "formation energy ± (eV/atom)": ("formation_energy_per_atom_std", "formation_energy_std_eV_per_atom"),
}


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def upload_zip(at, name: str, data: bytes):
    at.sidebar.file_uploader[0].set_value([(name, data, "application/zip")])
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def downloads(monkeypatch):
    """``get(at, label)``: the bytes a download button of the last run serves (AppTest keeps its media
    files in a storage that it drops after the run; this keeps it)."""
    stores = []

    class Kept(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Kept)

    def get(at, label: str) -> bytes:
        button = next(b for b in at.get("download_button") if b.proto.label == label)
        return stores[-1].get_file(button.proto.url.rsplit("/", 1)[-1]).content

    return get


def default_title() -> str:
    gallery = load_gallery()
    return literal(gallery[default_index(gallery)].name)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


# ---------------------------------------------------------------------------- a zip of real crystals


@needs_model
def test_zip_gives_the_numbers_of_predictor_predict_and_one_row_per_member(predictor, downloads):
    files = [*THREE, "lifepo4_olivine.cif"]
    members = {f"cifs/{f}": (EXAMPLES / f).read_bytes() for f in files}
    members.update({"cifs/": b"", "README.txt": b"four crystals", ".hidden.cif": b"x", "__MACOSX/cifs/._cu.cif": b"x"})
    at = upload_zip(run_app(), "crystals.zip", zip_bytes(members))
    assert "Predictions for the 5 files in crystals.zip" in texts(at.header)
    table = batch_tables(at)[0].value
    assert list(table["file"]) == [f"cifs/{f}" for f in files]
    expected = predictor.predict([read_structure(EXAMPLES / f) for f in files])
    for column, (key, _) in VALUES.items():
        assert list(table[column]) == pytest.approx([row[key] for row in expected], rel=1e-6, abs=1e-6), column
    assert [e.value for e in at.error] == [
        "README.txt: not a structure file by its name (CIF, POSCAR/CONTCAR, extended XYZ, pymatgen JSON), "
        "so it was skipped"
    ]
    assert crystal_subheaders(at)[0] == "cifs/nacl\\_rocksalt.cif"  # the first member, in detail

    parquet = pq.read_table(io.BytesIO(downloads(at, "All predictions (Parquet)")))
    assert tuple(parquet.column_names) == SCREEN_COLUMNS
    assert parquet.schema.field("band_gap_eV").type == pa.float64()
    assert parquet.schema.field("n_atoms").type == pa.int64() and parquet.schema.field("is_metal").type == pa.bool_()
    rows = parquet.to_pylist()
    assert [r["id"] for r in rows] == [f"cifs/{f}" for f in files] + ["README.txt"]  # rows out = members in
    assert {r["source"] for r in rows} == {"crystals.zip"} and [r["row"] for r in rows] == list(range(5))
    for _, (key, column) in VALUES.items():
        assert [r[column] for r in rows[:4]] == pytest.approx([row[key] for row in expected], rel=1e-6, abs=1e-6), column
    assert [r["is_metal"] for r in rows[:4]] == [row["is_metal"] for row in expected]
    assert [r["space_group"] for r in rows[:4]] == ["Fm-3m", "P4_2/mnm", "Fm-3m", "Pnma"]
    assert all(r["error"] is None and r["model"] == "sen_mp" for r in rows[:4])
    assert "not a structure file" in rows[4]["error"] and rows[4]["band_gap_eV"] is None
    # the same rows as Predictor.screen (the path of `sen screen`)
    screened = list(predictor.screen([(f"cifs/{f}", read_structure(EXAMPLES / f)) for f in files]))
    assert [r["band_gap_eV"] for r in rows[:4]] == pytest.approx([r["band_gap_eV"] for r in screened], rel=1e-6, abs=1e-6)
    assert [r["model_version"] for r in rows[:4]] == [r["model_version"] for r in screened]

    text = downloads(at, "All predictions (CSV)").decode()
    lines = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == list(SCREEN_COLUMNS) and len(lines) == 5
    assert [float(r["band_gap_eV"]) for r in lines[:4]] == pytest.approx(
        [r["band_gap_eV"] for r in rows[:4]], abs=1e-12
    )
    assert lines[4]["band_gap_eV"] == "" and lines[4]["error"] == rows[4]["error"]


# ---------------------------------------------------------------------------- hostile archives


def _nacl() -> bytes:
    return (EXAMPLES / "nacl_rocksalt.cif").read_bytes()


def _refused_archives() -> dict[str, tuple[bytes, str]]:
    """Archive name -> (bytes, what the one line says)."""
    six_mb = b"0" * (6 * 1024 * 1024)  # deflates to a few kB
    many = {f"c{i:04d}.cif": b"" for i in range(1001)}
    spread = {f"part{i}.cif": b"1" * (4 * 1024 * 1024) for i in range(7)}  # 28 MB in all, 4 MB each
    return {
        "bomb.zip": (zip_bytes({"nacl.cif": _nacl(), "big.cif": six_mb}), "big.cif in bomb.zip unpacks to 6.0 MB"),
        "spread.zip": (zip_bytes(spread), "spread.zip unpacks to 28.0 MB; at most 25.0 MB in all"),
        "many.zip": (zip_bytes(many), "many.zip holds 1,001 entries; archives of at most 1,000"),
        "nested.zip": (zip_bytes({"a.cif": _nacl(), "inner.zip": zip_bytes({"b.cif": _nacl()})}), "another archive"),
        "climb.zip": (zip_bytes({"a.cif": _nacl(), "../../etc/b.cif": _nacl()}), "absolute or '..' path"),
        "absolute.zip": (zip_bytes({"/tmp/b.cif": _nacl()}), "absolute or '..' path"),
        "windows.zip": (zip_bytes({"C:\\temp\\b.cif": _nacl()}), "absolute or '..' path"),
        "broken.zip": (b"PK\x03\x04 not really a zip", "cannot be read as a zip archive"),
        "huge.zip": (b"PK\x03\x04" + b"\0" * (5 * 1024 * 1024 + 1), "archives of at most 5.0 MB are accepted"),
    }


def test_hostile_archives_are_refused_before_anything_is_unpacked():
    for name, (data, reason) in _refused_archives().items():
        with pytest.raises(ArchiveError) as refused:
            archive_members(CrystalFile.from_bytes(name, data))
        message = str(refused.value)
        assert reason in message and "\n" not in message, (name, message)
    assert zipfile.ZipFile(io.BytesIO(_refused_archives()["climb.zip"][0])).namelist()[1] == "../../etc/b.cif"


def test_members_are_read_in_memory_and_other_files_are_skipped_with_a_reason():
    data = zip_bytes({"d/": b"", "d/NaCl.cif": _nacl(), "d/POSCAR": b"x", "notes.md": b"# hi", "d/.DS_Store": b"x"})
    members = archive_members(CrystalFile.from_bytes("set.zip", data))
    assert [m.name for m in members] == ["d/NaCl.cif", "d/POSCAR", "notes.md"]
    assert members[0].data == _nacl() and members[0].source == "set.zip" and len(members[0].digest) == 64
    assert isinstance(members[2], SkippedFile) and "not a structure file" in members[2].reason
    assert not isinstance(members[1], SkippedFile)  # POSCAR by its name: read (and failing) like any upload


@needs_model
def test_refused_archives_show_one_line_and_the_page_goes_on():
    at = run_app()
    for name, (data, reason) in _refused_archives().items():
        upload_zip(at, name, data)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and reason.replace("_", "\\_") in errors[0], (name, errors)
        assert not batch_tables(at), name
        assert crystal_subheaders(at)[0] == default_title(), name  # the example is shown instead
    upload_zip(at, "notes.zip", zip_bytes({"notes.txt": b"no crystals here", "more/": b""}))
    no_crystals = (
        "notes.zip holds no structure files (CIF, POSCAR/CONTCAR, extended XYZ or pymatgen JSON, by their names)"
    )
    assert [e.value for e in at.error] == [literal(no_crystals)] and not batch_tables(at)


# ---------------------------------------------------------------------------- the session's limits


def _rocksalt_cif(a: float) -> bytes:
    """NaCl with lattice constant ``a`` (8 atoms): different bytes for each ``a``, so each is a new file."""
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return str(CifWriter(nacl)).encode()


def test_session_atoms_stop_a_batch_and_repeats_are_counted_once(monkeypatch, small_config):
    monkeypatch.setattr(results, "MAX_SESSION_ATOMS", 20)
    tiny = Predictor.untrained(small_config, seed=0)
    work = SessionWork()
    files = [CrystalFile.from_bytes(f"{i}.cif", _rocksalt_cif(5.5 + 0.01 * i)) for i in range(3)]
    result = predict_files([files[0], files[0], files[1], files[2]], tiny, work=work)
    assert [r["file"] for r in result.records] == ["0.cif", "0.cif", "1.cif"]
    assert work.n_files == 2 and work.n_atoms == 16  # the repeat counted once
    assert result.stopped == ["2.cif"] and len(result.rows) == 4
    assert "this session's limit" in result.rows[3]["error"] and result.rows[3]["band_gap_eV"] is None
    assert result.session_limit.startswith("This session has predicted 2 files (16 atoms)")
    again = predict_files(files[:2], tiny, work=work)  # files it predicted before: still predicted
    assert len(again.records) == 2 and not again.stopped and work.n_files == 2


@needs_model
def test_session_file_limit_after_repeated_uploads(monkeypatch, downloads):
    monkeypatch.setattr(results, "MAX_SESSION_FILES", 4)
    first = {f"a/{f}": (EXAMPLES / f).read_bytes() for f in THREE}
    at = upload_zip(run_app(), "first.zip", zip_bytes(first))
    assert len(batch_tables(at)[0].value) == 3 and not at.warning
    # a second upload: one file predicted before (not counted again), then two new ones
    second = {"b/nacl_again.cif": first["a/nacl_rocksalt.cif"], "b/fe.cif": (EXAMPLES / "fe_bcc.cif").read_bytes()}
    second["b/si.cif"] = (EXAMPLES / "si_diamond.cif").read_bytes()
    add_upload(at, ("second.zip", zip_bytes(second), "application/zip"))
    assert list(batch_tables(at)[0].value["file"]) == ["b/nacl_again.cif", "b/fe.cif"]
    warning = texts(at.warning)
    assert "This session has predicted 4 files" in warning and "use `sen screen` for more" in warning
    assert "Not predicted: b/si.cif" in warning
    rows = pq.read_table(io.BytesIO(downloads(at, "All predictions (Parquet)"))).to_pylist()
    assert len(rows) == 3 and "this session's limit" in rows[2]["error"]
    assert at.session_state["_session_work"].n_files == 4
    # a new single file is not shown in detail either; the example is, with the same line
    add_upload(at, example_bytes("zno_wurtzite.cif"))
    assert "This session has predicted 4 files" in texts(at.warning)
    assert crystal_subheaders(at)[0] == default_title()
    # a file the session predicted before is still shown
    add_upload(at, ("again.cif", first["a/tio2_rutile.cif"], "chemical/x-cif"))
    assert crystal_subheaders(at)[0] == "again.cif" and not at.warning
    assert at.session_state["_session_work"].n_files == 4
