"""Shared fixtures: small real crystals built from their space groups, and a tiny SEN configuration."""

from __future__ import annotations

import pytest
import torch
from pymatgen.core import Lattice, Structure

from sen.model import SENConfig

torch.set_num_threads(1)  # the test machine is shared; tiny models do not need more


def build_crystals() -> dict[str, Structure]:
    """Conventional cells of a few well-known crystals (experimental lattice parameters, Å)."""
    hexagonal, tetragonal = Lattice.hexagonal, Lattice.tetragonal
    return {
        "Si": Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]),
        "NaCl": Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.640), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "Cu": Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.615), ["Cu"], [[0, 0, 0]]),
        "CsCl": Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.123), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "SrTiO3": Structure.from_spacegroup(
            "Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]
        ),
        "ZnO": Structure.from_spacegroup(
            "P6_3mc", hexagonal(3.2496, 5.2042), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.3819]]
        ),
        "TiO2": Structure.from_spacegroup(
            "P4_2/mnm", tetragonal(4.5937, 2.9587), ["Ti", "O"], [[0, 0, 0], [0.30478, 0.30478, 0]]
        ),
        "Al2O3": Structure.from_spacegroup(
            "R-3c", hexagonal(4.7602, 12.9933), ["Al", "O"], [[0, 0, 0.35216], [0.30624, 0, 0.25]]
        ),
    }


@pytest.fixture(scope="session")
def crystals() -> dict[str, Structure]:
    """Name -> Structure for Si (227), NaCl (225), Cu (225), CsCl (221), SrTiO3 (221), ZnO (186),
    TiO2 rutile (136) and Al2O3 corundum (167). Copy a structure before changing it."""
    return build_crystals()


@pytest.fixture(scope="session")
def small_config() -> SENConfig:
    """A tiny SEN (a few thousand parameters) that runs in milliseconds on one CPU core."""
    return SENConfig(width=16, n_rbf=8, n_capsules=4, capsule_dim=4, capsule_width=16, attention_heads=2)
