"""Several files uploaded at once, or one .zip of them: a table of predictions made as ``sen screen``
makes them, with a progress bar and the rows as Parquet and CSV downloads.

A .zip is untrusted: it is read in memory with :mod:`zipfile` (never extracted to disk) and refused as a
whole, with one line, when it is larger than the uploader accepts, holds more than
:data:`MAX_ARCHIVE_ENTRIES` entries, a member unpacks to more than :data:`MAX_MEMBER_BYTES` or all of them
to more than :data:`MAX_ARCHIVE_UNPACKED` (zip bombs), or it holds another zip or a member with an
absolute or ``..`` path. Directories, hidden files and macOS's ``__MACOSX/`` copies are left out; any
other member that is not a structure file gets a row with its reason.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from pathlib import PurePosixPath

import streamlit as st

from app.common import literal, panel
from app.results import (
    TITLES,
    UNITS,
    BatchResult,
    CrystalFile,
    SkippedFile,
    predict_files,
    record_key,
    screen_csv,
    screen_parquet,
    session_work,
)
from sen.errors import first_line
from sen.io import DEFAULT_MAX_BYTES
from sen.predict import Predictor
from sen.screen import is_structure_file

#: Bounds on an uploaded .zip besides its own size (the uploader's limit, server.maxUploadSize).
MAX_ARCHIVE_ENTRIES = 1000  # entries in its directory, folders included
MAX_MEMBER_BYTES = DEFAULT_MAX_BYTES  # what one member may unpack to: as much as one uploaded file (5 MB)
MAX_ARCHIVE_UNPACKED = 25 * 1024 * 1024  # what all its members may unpack to together
MAX_FAILURE_LINES = 5  # failed files named on the page one by one (the downloads give every reason)
_ZIP_MAGIC = b"PK\x03\x04"


class ArchiveError(Exception):
    """An uploaded archive that is refused as a whole; the message is one line for the visitor."""


@panel("several files")
def several_files(uploads: list[CrystalFile], predictor: Predictor | None) -> None:
    """A table of predictions for the files of one upload (bounded in files and atoms, per upload and per session)."""
    st.header(_title(uploads), anchor=False)
    if predictor is None:
        st.error("No model is loaded, so there are no predictions.")
        return
    bar = st.progress(0.0, text="Predicting ...")

    def progress(done: int, total: int, name: str) -> None:
        # Streamlit stops the run here if the visitor has left (or changed something meanwhile).
        bar.progress(done / total, text=literal(f"{done} of {total} files: {name}"))

    result = predict_files(uploads, predictor, progress, work=session_work())
    tried = len(uploads) - len(result.left_out) - len(result.stopped)
    bar.progress(1.0, text=f"{len(result.records)} of {tried} files predicted")
    _limits(result, len(uploads))
    if result.records:
        rows = [table_row(r, predictor.targets) for r in result.records]
        st.dataframe(rows, hide_index=True, column_config=column_config(predictor))
    if result.rows:
        _downloads(result)
    for name, reason in result.failures[:MAX_FAILURE_LINES]:
        st.error(literal(f"{name}: {reason}"))
    if len(result.failures) > MAX_FAILURE_LINES:
        more = len(result.failures) - MAX_FAILURE_LINES
        st.error(f"... and {more} more files that could not be predicted; the downloads give each one's reason.")
    st.divider()


def _title(uploads: list[CrystalFile]) -> str:
    archives = {f.source for f in uploads}
    if len(archives) == 1 and next(iter(archives)):  # the files of one .zip
        return literal(f"Predictions for the {len(uploads)} files in {next(iter(archives))}")
    return f"Predictions for {len(uploads)} uploaded files"


def _limits(result: BatchResult, n_files: int) -> None:
    """One line for each limit that left files out: the upload's, the session's."""
    if result.left_out:
        st.warning(
            literal(
                f"{len(result.left_out)} of {n_files} files were not predicted: {result.limit}. "
                f"Left out: {_names(result.left_out)}. Upload them separately, or use `sen screen` for many files."
            )
        )
    if result.stopped:
        st.warning(f"{result.session_limit} " + literal(f"Not predicted: {_names(result.stopped)}."))


def _downloads(result: BatchResult) -> None:
    """The rows (one per file, as ``sen screen`` writes them) as CSV and Parquet."""
    left, right = st.columns(2)
    left.download_button(
        "All predictions (CSV)", screen_csv(result.rows), "sen_predictions.csv", "text/csv", on_click="ignore"
    )
    right.download_button(
        "All predictions (Parquet)",
        screen_parquet(result.rows),
        "sen_predictions.parquet",
        "application/vnd.apache.parquet",
        on_click="ignore",
    )


def _names(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def value_column(target: str) -> str:
    """Table column of a predicted property, e.g. ``band gap (eV)``."""
    return f"{TITLES.get(target, target).lower()} ({UNITS.get(target, '')})"


def spread_column(target: str) -> str:
    """Table column of the networks' spread for a property, e.g. ``band gap ± (eV)``."""
    return f"{TITLES.get(target, target).lower()} ± ({UNITS.get(target, '')})"


def table_row(record: dict, targets: tuple[str, ...]) -> dict:
    """One row of the table: the prediction and the networks' spread in separate columns."""
    row = {
        "file": record["file"],
        "formula": record["formula"],
        "atoms": record["n_atoms"],
        "space group": f"{record['space_group_symbol']} ({record['space_group_number']})",
    }
    for target in targets:
        row[value_column(target)] = record.get(record_key(target))
        if record_key(target, "_std") in record:
            row[spread_column(target)] = record[record_key(target, "_std")]
    if "is_metal" in record:
        row["metal / insulator"] = "metal" if record["is_metal"] else "insulator"
    return row


def column_config(predictor: Predictor) -> dict:
    """Number formats and explanations of the prediction columns."""
    config = {}
    for target in predictor.targets:
        digits = 2 if target == "band_gap" else 3
        config[value_column(target)] = st.column_config.NumberColumn(
            format=f"%.{digits}f", help=f"Predicted {TITLES.get(target, target).lower()}"
        )
        config[spread_column(target)] = st.column_config.NumberColumn(
            format=f"%.{digits + 1}f",
            help=f"Spread (standard deviation) of the {predictor.members_for(target)} networks' predictions",
        )
    return config


# ---------------------------------------------------------------------------- .zip uploads


def is_archive(upload: CrystalFile) -> bool:
    """Whether an upload is a zip archive (by its name or its first bytes)."""
    return upload.name.lower().endswith(".zip") or upload.data[:4] == _ZIP_MAGIC


def upload_limit() -> int:
    """Bytes the uploader accepts in one file (server.maxUploadSize, in MB)."""
    return int(st.get_option("server.maxUploadSize")) * 1024 * 1024


def archive_members(archive: CrystalFile) -> list[CrystalFile]:
    """The files in an uploaded zip, in its order, read in memory: each structure file as a CrystalFile
    (``source``: the archive's name), any other file as a :class:`SkippedFile` with its reason.

    Raises:
        ArchiveError: the archive is refused as a whole (see the module's docstring); one line.
    """
    name = archive.name
    if len(archive.data) > upload_limit():
        raise ArchiveError(
            f"{name} is {_mb(len(archive.data))}; archives of at most {_mb(upload_limit())} are accepted"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(archive.data)) as zf:
            entries = zf.infolist()
            _check_entries(name, entries)
            return [_member(zf, info, name) for info in entries if not info.is_dir() and not _hidden(info.filename)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"{name} cannot be read as a zip archive ({first_line(exc)})") from None


def _check_entries(name: str, entries: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive by what its directory says, before anything is unpacked."""
    if len(entries) > MAX_ARCHIVE_ENTRIES:
        raise ArchiveError(
            f"{name} holds {len(entries):,} entries; archives of at most {MAX_ARCHIVE_ENTRIES:,} are accepted"
        )
    total = 0
    for info in entries:
        path = info.filename
        if _unsafe(path):
            raise ArchiveError(f"{name} holds a member with an absolute or '..' path ({path[:100]}), so it is refused")
        if info.is_dir():
            continue
        if path.lower().endswith(".zip"):
            raise ArchiveError(f"{name} holds another archive ({path[:100]}); zip the structure files themselves")
        if info.file_size > MAX_MEMBER_BYTES:
            raise ArchiveError(
                f"{path[:100]} in {name} unpacks to {_mb(info.file_size)}; at most {_mb(MAX_MEMBER_BYTES)} per file"
            )
        total += info.file_size
    if total > MAX_ARCHIVE_UNPACKED:
        raise ArchiveError(f"{name} unpacks to {_mb(total)}; at most {_mb(MAX_ARCHIVE_UNPACKED)} in all are accepted")


def _unsafe(path: str) -> bool:
    """An absolute path (``/x``, ``C:\\x``) or one that climbs out of the archive (``a/../../x``)."""
    path = path.replace("\\", "/")
    return path.startswith("/") or re.match(r"[A-Za-z]:", path) is not None or ".." in path.split("/")


def _hidden(path: str) -> bool:
    """Hidden files and macOS's resource-fork copies (``__MACOSX/``): not the visitor's crystals."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1].startswith("."))


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str) -> CrystalFile:
    """One file of the archive, read in memory (at most the size its entry declares, which is bounded)."""
    path = info.filename
    if not is_structure_file(PurePosixPath(path)):
        reason = (
            "not a structure file by its name (CIF, POSCAR/CONTCAR, extended XYZ, pymatgen JSON), so it was skipped"
        )
        return SkippedFile(path, b"", title=path, source=archive, reason=reason)
    if info.flag_bits & 0x1:
        return SkippedFile(path, b"", title=path, source=archive, reason="encrypted; zip it without a password")
    try:
        with zf.open(info) as member:
            data = member.read(MAX_MEMBER_BYTES + 1)  # zipfile stops at the declared size, which was checked
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError, zlib.error) as exc:
        reason = f"could not be unpacked ({first_line(exc)})"
        return SkippedFile(path, b"", title=path, source=archive, reason=reason)
    if len(data) > MAX_MEMBER_BYTES:
        raise ArchiveError(f"{path[:100]} in {archive} unpacks to more than {_mb(MAX_MEMBER_BYTES)}")
    return CrystalFile.from_bytes(path, data, origin="upload", title=path, source=archive)


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / (1024 * 1024):.1f} MB"
