"""sen.allocator: with the setting a Predictor applies at its first batch, repeated forward passes on a large batch stop
faulting in fresh memory from the kernel (the cost it removes); with SEN_KEEP_FREED_MEMORY=0 they do not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# a fresh process each time: the setting is process-wide and permanent
_SCRIPT = textwrap.dedent(
    """
    import json, resource, torch
    import sen.allocator
    from sen.allocator import keep_freed_memory
    from sen.graph import build_graph, collate
    from sen.io import read_structure
    from sen.predict import BATCH_MEMORY_KEPT, Predictor

    torch.set_num_threads(1)
    predictor = Predictor.untrained()
    s = read_structure("assets/examples/lifepo4_olivine.cif")
    predictor.predict([s, s])  # a page's crystals: malloc left alone
    after_two = sen.allocator._applied
    predictor.predict([s] * BATCH_MEMORY_KEPT)  # a batch: the setting (or not, by the environment)
    s.make_supercell([2, 2, 2])
    batch = collate([build_graph(s)] * 4)  # 896 atoms, every atom a row: edge activations of several MB
    with torch.inference_mode():
        for _ in range(2):
            predictor.model(batch)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            predictor.model(batch)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"after_two": after_two, "applied": keep_freed_memory(), "faults": faults,
                      "edges": int(batch.edge_src.shape[0])}))
    """
)


def _run(**env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.update(env)
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_forward_passes_reuse_their_memory_with_the_setting_and_fault_it_in_again_without():
    kept = min((_run() for _ in range(2)), key=lambda r: r["faults"])  # where the heap lands varies a little
    fresh = _run(SEN_KEEP_FREED_MEMORY="0")
    assert kept["after_two"] is None and fresh["after_two"] is None  # not for one or two crystals
    assert kept["applied"] and not fresh["applied"]
    assert kept["edges"] > 10_000
    # each pass allocates and frees tens of MB: without the setting that is thousands of fresh pages a pass
    assert fresh["faults"] > 5_000
    assert kept["faults"] < fresh["faults"] / 5
