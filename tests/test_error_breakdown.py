"""benchmarks/error_breakdown.py: test-split MAE by atoms per cell and by metal / non-metal, on a known toy case."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.error_breakdown import breakdown, markdown  # noqa: E402

FE, GAP = "formation_energy_per_atom", "band_gap"


def test_breakdown_groups_and_tail():
    # 200 crystals: 100 two-atom metals off by 0.1 eV/atom, 100 thirty-atom insulators off by 0.02 eV/atom,
    # except one insulator off by 5 eV/atom (the worst 1 % = 2 crystals: that one and a metal)
    true = np.zeros((200, 2))
    true[100:, 1] = 2.0
    pred = true.copy()
    pred[:100, 0] += 0.1
    pred[100:, 0] -= 0.02
    pred[150, 0] = 5.0
    n_atoms = np.array([2] * 100 + [30] * 100)
    result = breakdown(pred, true, n_atoms, (FE, GAP))
    g = result["groups"]
    assert g["all"]["n"] == 200 and g["1-4 atoms"]["n"] == 100 and g["21-40 atoms"]["n"] == 100
    assert g["5-10 atoms"]["n"] == 0 and g["5-10 atoms"][FE] is None
    assert g["1-4 atoms"][FE] == pytest.approx(0.1)
    assert g["metals (gap 0)"][FE] == pytest.approx(0.1)
    assert g["non-metals"][FE] == pytest.approx((99 * 0.02 + 5.0) / 100)
    assert g["all"][GAP] == 0.0 and result["tail"][GAP]["share_of_total_error_from_worst_1pct"] == 0.0
    tail = result["tail"][FE]
    total = 100 * 0.1 + 99 * 0.02 + 5.0
    assert tail["share_of_total_error_from_worst_1pct"] == pytest.approx((5.0 + 0.1) / total)
    assert tail["mae_without_worst_1pct"] == pytest.approx((total - 5.1) / 198)
    text = markdown(result, (FE, GAP))
    assert "| 1-4 atoms | 100 | 0.1000 | 0.0000 |" in text
    assert "| 5-10 atoms | 0 | - | - |" in text


def test_breakdown_without_a_gap_target_has_no_metal_rows():
    true = np.array([[0.0], [1.0], [2.0]])
    result = breakdown(true + 0.5, true, np.array([1, 50, 200]), (FE,))
    assert "metals (gap 0)" not in result["groups"]
    assert result["groups"]["≥81 atoms"] == {"n": 1, FE: 0.5}
