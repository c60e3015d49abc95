"""The gallery of example crystals in ``assets/examples/`` (each with its literature source)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
DEFAULT_EXAMPLE = "srtio3_perovskite.cif"  # opens the page: small, cubic, three orbits, an insulator


@dataclass(frozen=True)
class Example:
    """One gallery crystal: a CIF file and what ``sources.json`` says about it."""

    file: str  # file name inside the examples folder
    path: Path
    name: str  # e.g. "SrTiO3 (cubic perovskite)"
    formula: str = ""
    source: str = ""  # literature reference for the structure
    crystal_system: str = ""
    kind: str = ""  # "metal", "insulator", "semiconductor", ...
    n_atoms: int | None = None  # atoms in the file's cell

    @property
    def label(self) -> str:
        """Text for the gallery picker."""
        return f"{self.name} · {self.crystal_system}" if self.crystal_system else self.name


def load_gallery(folder: Path = EXAMPLES_DIR) -> list[Example]:
    """Every ``*.cif`` in ``folder``, in the order of ``sources.json`` (others after, by name).

    ``sources.json`` is a list of objects with at least ``file``; ``name``, ``formula``,
    ``source``, ``crystal_system``, ``kind`` and ``n_atoms`` are used when present. A
    missing or unreadable ``sources.json`` leaves names as file names.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cifs = {p.name: p for p in sorted(folder.glob("*.cif"))}
    examples: list[Example] = []
    for record in _read_sources(folder / "sources.json"):
        file = str(record.get("file", ""))
        if file not in cifs:
            continue
        n_atoms = record.get("n_atoms")
        examples.append(
            Example(
                file=file,
                path=cifs.pop(file),
                name=str(record.get("name") or Path(file).stem),
                formula=str(record.get("formula") or ""),
                source=str(record.get("source") or ""),
                crystal_system=str(record.get("crystal_system") or ""),
                kind=str(record.get("kind") or ""),
                n_atoms=int(n_atoms) if isinstance(n_atoms, int) else None,
            )
        )
    examples.extend(Example(file=name, path=path, name=Path(name).stem) for name, path in cifs.items())
    return examples


def _read_sources(path: Path) -> list[dict]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def default_index(examples: list[Example]) -> int:
    """Position of the crystal the page opens with."""
    for i, example in enumerate(examples):
        if example.file == DEFAULT_EXAMPLE:
            return i
    return 0
