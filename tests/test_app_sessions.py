"""Several visitors at once on one served app, over Streamlit's own websocket (benchmarks/bench_app_ws.py's
light client, no browser): every session gets its own complete page, with the crystal it picked."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_app_ws import Visitor, _complete, _rerun  # noqa: E402
from sen.predict import DEFAULT_MODEL, MODELS_DIR  # noqa: E402

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not (MODELS_DIR / DEFAULT_MODEL / "model.pt").is_file(), reason="no shipped weights"),
]


async def _visit(url: str, n: int) -> tuple[list[dict], list[dict]]:
    visitors = [Visitor(url) for _ in range(n)]
    await asyncio.gather(*(v.connect() for v in visitors))
    try:
        first = await asyncio.gather(*(v.run(_rerun()) for v in visitors))
        picks = await asyncio.gather(*(v.pick(3 + k) for k, v in enumerate(visitors)))  # all at the same moment
    finally:
        await asyncio.gather(*(v.close() for v in visitors))
    return first, picks


def test_concurrent_sessions_each_get_their_own_complete_page():
    from benchmarks.bench_app_browser import serve_app

    with serve_app() as url:
        first, picks = asyncio.run(_visit(url, 4))
    assert all(_complete(r) for r in first), [r["errors"] for r in first]
    for pick in picks:
        assert _complete(pick, pick["picked"].split(" · ")[0]), (pick["picked"], pick["footer"], pick["errors"])
    assert len({p["picked"] for p in picks}) == 4
