"""The predicted properties: their names, units and titles (the one table of them; no torch needed)."""

from __future__ import annotations

TARGETS = ("formation_energy_per_atom", "band_gap")
TARGET_UNITS = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV"}
TARGET_TITLES = {"formation_energy_per_atom": "Formation energy", "band_gap": "Band gap"}


def is_gap_target(name: str) -> bool:
    """Targets whose name mentions a gap (``band_gap``, ``optical_gap``) get the metal / non-metal gate."""
    return "gap" in name
