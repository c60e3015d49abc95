"""The sidebar: which crystal (gallery or uploads), the symmetry tolerance and the 3D-view controls.

Uploads: Streamlit's multi-file uploader adds every new file to the ones already there. The page
follows the visitor instead: the files chosen in the most recent upload form the *batch* (a table
of predictions when there are several; a .zip stands for the files in it, see app/batch.py), and
the first of them is shown in detail; files from earlier uploads stay in the uploader and can still
be picked for the detailed view. An upload shown in detail counts toward the session's limits
(app.results.SessionWork), as the batch's files do.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import streamlit as st

from app import viewer
from app.batch import ArchiveError, archive_members, is_archive
from app.common import literal
from app.gallery import Example, default_index
from app.results import (
    MAX_BATCH_ATOMS,
    MAX_BATCH_FILES,
    MAX_SESSION_ATOMS,
    MAX_SESSION_FILES,
    ComputeError,
    CrystalFile,
    SkippedFile,
    read_crystal,
    session_work,
)
from sen.errors import StructureError
from sen.predict import Predictor
from sen.symmetry import DEFAULT_ANGLE_TOLERANCE, DEFAULT_SYMPREC

UPLOAD_HELP = (
    "CIF, POSCAR/CONTCAR, extended XYZ (with a Lattice) or pymatgen JSON; one crystal per file, "
    "at most 5 MB and 500 atoms; or a .zip of such files. Several files chosen at once, or a .zip, give a "
    f"table of predictions (at most {MAX_BATCH_FILES} files and {MAX_BATCH_ATOMS:,} atoms in all per upload, "
    f"{MAX_SESSION_FILES} files and {MAX_SESSION_ATOMS:,} atoms per session)."
)
STRUCTURE_KINDS = "CIF, POSCAR/CONTCAR, extended XYZ or pymatgen JSON, by their names"
SHOW_UPLOADS, SHOW_EXAMPLE = "Uploaded file", "Example crystal"
_UPLOAD_GROUPS = "_upload_groups"  # session state: file_id -> number of the upload it came in
_INSPECT = "inspect_upload"  # session state / widget key: file_id of the upload shown in detail
_ARCHIVES = "_upload_archives"  # session state: file_id of a .zip -> (its files, or the reason it was refused)


@dataclass
class Settings:
    """Everything the sidebar decides."""

    crystal: CrystalFile | None  # the crystal to show in detail (None: nothing to show)
    example: CrystalFile | None  # the gallery choice (shown when an upload cannot be read)
    uploads: list[CrystalFile] = field(default_factory=list)  # every file in the uploader
    batch: list[CrystalFile] = field(default_factory=list)  # the files of the most recent upload
    symprec: float = DEFAULT_SYMPREC
    angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE
    colour_mode: str = viewer.COLOUR_MODES[0]
    supercell: tuple[int, int, int] = (1, 1, 1)
    label_atoms: bool = False


def _show(choice: str) -> None:
    st.session_state["show_source"] = choice


def sidebar(gallery: list[Example], predictor: Predictor | None) -> Settings:
    """Input and view controls; returns the settings for this run."""
    st.sidebar.header("Crystal")
    example = _example_picker(gallery)
    uploads, batch, inspected = _uploads(has_gallery=bool(gallery))
    crystal = example
    if inspected is not None:
        show = SHOW_UPLOADS
        if example is not None:
            show = st.sidebar.radio("Show in detail", (SHOW_UPLOADS, SHOW_EXAMPLE), key="show_source", horizontal=True)
        if show == SHOW_UPLOADS and _within_session(inspected):
            crystal = inspected
    symprec, angle = _tolerances(predictor)
    mode, supercell, label_atoms = _view_controls()
    return Settings(crystal, example, uploads, batch, symprec, angle, mode, supercell, label_atoms)


def _example_picker(gallery: list[Example]) -> CrystalFile | None:
    side = st.sidebar
    if not gallery:
        side.warning("No example crystals found in assets/examples/; upload a file.")
        return None
    pick = side.selectbox(
        "Example crystal",
        range(len(gallery)),
        index=default_index(gallery),
        format_func=lambda i: gallery[i].label,
        key="example",
        on_change=_show,
        args=(SHOW_EXAMPLE,),
    )
    chosen = gallery[pick]
    if chosen.source:
        side.caption(literal(f"Source: {chosen.source}"))
    return CrystalFile.from_path(chosen.path, origin="example", title=chosen.name, source=chosen.source)


def _uploads(has_gallery: bool) -> tuple[list[CrystalFile], list[CrystalFile], CrystalFile | None]:
    """All uploaded files, those of the most recent upload (a .zip: the files in it), and the one to show in detail."""
    files = st.sidebar.file_uploader(
        "... or upload your own" if has_gallery else "Upload crystal files",
        accept_multiple_files=True,
        key="uploads",
        help=UPLOAD_HELP,
        on_change=_show,
        args=(SHOW_UPLOADS,),
    )
    files = list(files or [])
    if not files:
        st.session_state[_UPLOAD_GROUPS], st.session_state["_upload_digests"] = {}, {}
        st.session_state[_ARCHIVES] = {}
        return [], [], None
    by_id = {f.file_id: _crystal_file(f) for f in files}
    ids = list(by_id)
    digests, archives = st.session_state["_upload_digests"], st.session_state.get(_ARCHIVES, {})
    st.session_state["_upload_digests"] = {i: digests[i] for i in ids}  # forget removed files
    st.session_state[_ARCHIVES] = {i: archives[i] for i in ids if i in archives}
    latest = _latest_upload(ids)
    if st.session_state.get(_INSPECT) not in by_id:
        st.session_state[_INSPECT] = latest[0]
    if len(ids) > 1:
        newest_first = sorted(ids, key=lambda i: -st.session_state[_UPLOAD_GROUPS][i])  # stable within an upload
        st.sidebar.selectbox(
            "Uploaded file to inspect", newest_first, key=_INSPECT, format_func=lambda i: by_id[i].name
        )
    inspect = st.session_state[_INSPECT]
    for i in dict.fromkeys([*latest, inspect]):  # a refused archive of this upload, or the one picked: why
        refused = _expanded(i, by_id[i])[1]
        if refused:
            st.error(literal(refused))
    batch = [f for i in latest for f in _expanded(i, by_id[i])[0]]
    shown = next((f for f in _expanded(inspect, by_id[inspect])[0] if not isinstance(f, SkippedFile)), None)
    return list(by_id.values()), batch, shown


def _expanded(file_id: str, upload: CrystalFile) -> tuple[list[CrystalFile], str | None]:
    """The files an upload stands for: itself, or the files in a .zip (unpacked once per upload, in memory);
    a refused .zip stands for none, with the reason."""
    if not is_archive(upload):
        return [upload], None
    archives = st.session_state.setdefault(_ARCHIVES, {})
    if file_id not in archives:
        try:
            members = archive_members(upload)
        except ArchiveError as exc:
            archives[file_id] = ([], str(exc))
        else:
            empty = all(isinstance(m, SkippedFile) for m in members)
            archives[file_id] = (
                ([], f"{upload.name} holds no structure files ({STRUCTURE_KINDS})") if empty else (members, None)
            )
    return archives[file_id]


def _within_session(crystal: CrystalFile) -> bool:
    """Count an upload shown in detail toward the session's work; False (with the reason) once the session
    may predict no more (a file it predicted before is always shown)."""
    try:
        n_atoms = len(read_crystal(crystal))
    except (StructureError, ComputeError):
        return True  # not predicted: the page says why it cannot be read
    work = session_work()
    if not work.allows(crystal.digest, n_atoms):
        st.warning(f"{work.limit_message()} " + literal(f"{crystal.name} is not shown."))
        return False
    work.add(crystal.digest, n_atoms)
    return True


def _crystal_file(upload) -> CrystalFile:
    """The upload as a CrystalFile; its SHA-256 is computed once per uploaded file, not per rerun."""
    digests = st.session_state.setdefault("_upload_digests", {})
    data = upload.getvalue()
    if upload.file_id not in digests:
        digests[upload.file_id] = CrystalFile.from_bytes(upload.name, data).digest
    return CrystalFile(upload.name, data, "upload", upload.name, "", digests[upload.file_id])


def _latest_upload(ids: list[str]) -> list[str]:
    """The ids of the files that came in the most recent upload (in the uploader's order).

    A new upload also makes its first file the one shown in detail.
    """
    groups: dict[str, int] = {i: g for i, g in st.session_state.get(_UPLOAD_GROUPS, {}).items() if i in ids}
    new = [i for i in ids if i not in groups]
    if new:
        number = max(groups.values(), default=0) + 1
        groups.update(dict.fromkeys(new, number))
        st.session_state[_INSPECT] = new[0]
    st.session_state[_UPLOAD_GROUPS] = groups
    newest = max(groups.values())
    return [i for i in ids if groups[i] == newest]


def _tolerances(predictor: Predictor | None) -> tuple[float, float]:
    side = st.sidebar
    side.header("Symmetry tolerance")
    model_symprec = predictor.graph_config.symprec if predictor else DEFAULT_SYMPREC
    model_angle = predictor.graph_config.angle_tolerance if predictor else DEFAULT_ANGLE_TOLERANCE
    symprec = side.number_input(
        "Distance tolerance symprec (Å)",
        min_value=0.0001,
        max_value=1.0,
        value=float(model_symprec),
        step=0.005,
        format="%.4f",
        key="symprec",
        help="How far (Å) atoms may be from perfectly symmetric positions and still count as equivalent.",
    )
    angle = side.number_input(
        "Angle tolerance (°)",
        min_value=0.1,
        max_value=30.0,
        value=float(model_angle),
        step=1.0,
        key="angle_tolerance",
        help="How far (degrees) lattice angles may be from ideal values.",
    )
    return float(symprec), float(angle)


def _view_controls() -> tuple[str, tuple[int, int, int], bool]:
    side = st.sidebar
    side.header("3D view")
    mode = side.radio("Colour atoms by", viewer.COLOUR_MODES, key="colour_mode")
    side.caption("Supercell (repetitions along a, b, c)")
    columns = side.columns(3)
    supercell = tuple(
        int(col.number_input(axis, min_value=1, max_value=3, value=1, step=1, key=f"supercell_{axis}"))
        for col, axis in zip(columns, "abc", strict=True)
    )
    label_atoms = side.checkbox("Label atoms with their orbit", key="label_atoms")
    return mode, supercell, label_atoms


def with_library_pick(settings: Settings, picked: CrystalFile | None) -> Settings:
    """The settings with the crystal to show in detail chosen among the gallery, the uploads and a crystal
    picked in the library search: whichever of the three the visitor changed last (the gallery first)."""
    state = st.session_state
    sources = {
        "example": settings.example.digest if settings.example is not None else None,
        "upload": tuple(c.digest for c in settings.batch) or None,
        "library": picked.digest if picked is not None else None,
    }
    if "_sources" not in state:  # the first run: a linked library crystal, else an upload, else the gallery
        latest = "library" if sources["library"] else "upload" if sources["upload"] else "example"
    else:
        latest = state.get("_latest_source", "example")
        for name, value in sources.items():
            if value is not None and value != state["_sources"].get(name):
                latest = name  # changed since the last run
    if sources.get(latest) is None:  # what was shown is gone (a cleared search or upload)
        latest = "upload" if sources["upload"] else "example"
    state["_sources"], state["_latest_source"] = sources, latest
    if latest == "library":
        return replace(settings, crystal=picked)
    if latest == "example" and settings.example is not None:
        return replace(settings, crystal=settings.example)
    return settings
