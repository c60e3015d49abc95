"""Server time under load, without browsers: N concurrent sessions over Streamlit's own websocket.

bench_app_load.py drives real Chromium pages, but on this 2-core machine the browsers take most of
the CPU, so its timings mix server and client. Here each visitor is a light websocket client that
speaks the app's protocol (``BackMsg`` / ``ForwardMsg`` protobufs from ``streamlit.proto``) and
renders nothing:

1. every session connects to ``/_stcore/stream`` and asks for the first page (``rerun_script``),
   reading the server's messages until ``script_finished``; the gallery picker's widget id and
   options come from those messages;
2. when all have their first page, all pick a gallery crystal at the same moment (a ``rerun_script``
   carrying the picker's new value, as the browser sends it), each a different one where there
   are enough crystals;
3. a pick's **server time** is from sending that message to the server's ``script_finished``: the
   script, the waiting for the shared cores and the transfer of every message of the page, but no
   rendering. The page must be complete: its footer ("Page complete: <crystal>") arrived and no
   error or exception element was sent.

Server memory (RSS with its children) is sampled before, during and after. Writes
``benchmarks/results/app_ws_load.json``:

    python benchmarks/bench_app_ws.py [--sessions 20] [--rounds 3]

Each round is a new set of sessions picking at once; round 1 computes each crystal's prediction
(cold), later rounds find it in the server's cache (warm).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_app_browser import serve_app  # noqa: E402
from benchmarks.bench_app_load import server_rss_mb  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "app_ws_load.json"
PICKER_LABEL = "Example crystal"  # the sidebar's gallery picker (app/sidebar.py)
TIMEOUT_S = 300.0


def _rerun(query: str = "", widgets: list | None = None) -> bytes:
    from streamlit.proto.BackMsg_pb2 import BackMsg

    msg = BackMsg()
    msg.rerun_script.query_string = query
    msg.rerun_script.page_script_hash = ""
    for widget in widgets or []:
        msg.rerun_script.widget_states.widgets.append(widget)
    return msg.SerializeToString()


def _walk_texts(element) -> list[str]:
    """Every text-like field of a delta element (captions, alerts, markdown)."""
    kind = element.WhichOneof("type")
    inner = getattr(element, kind) if kind else None
    body = getattr(inner, "body", None)
    return [body] if isinstance(body, str) else []


class Visitor:
    """One session over the websocket; collects what each run sent."""

    def __init__(self, url: str):
        self.url = url
        self.ws = None
        self.picker_id: str | None = None
        self.options: list[str] = []
        self.widgets: dict[str, object] = {}  # widget id -> its last WidgetState (sent back with each rerun)

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        ws_url = self.url.replace("http://", "ws://") + "/_stcore/stream"
        self.ws = await connect(ws_url, subprotocols=["streamlit"], origin=self.url, max_size=None,
                                open_timeout=60, ping_interval=None)  # fmt: skip

    async def run(self, payload: bytes) -> dict:
        """Send one rerun; read until the script finished. Returns timing and what the page held."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        started = time.perf_counter()
        await self.ws.send(payload)
        texts, errors, n_bytes = [], [], 0
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), TIMEOUT_S)
            n_bytes += len(raw)
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            kind = msg.WhichOneof("type")
            if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                element = msg.delta.new_element
                etype = element.WhichOneof("type")
                if etype == "selectbox" and element.selectbox.label == PICKER_LABEL:
                    self.picker_id, self.options = element.selectbox.id, list(element.selectbox.options)
                if etype == "exception":
                    errors.append(f"exception: {element.exception.message}")
                elif etype == "alert" and element.alert.format == 1:  # 1: ERROR
                    errors.append(element.alert.body)
                texts += _walk_texts(element)
            elif kind == "script_finished":
                seconds = time.perf_counter() - started
                break
        footer = next((t for t in texts if t.startswith("Page complete: ")), None)
        return {"seconds": seconds, "footer": footer, "errors": errors, "bytes": n_bytes}

    async def pick(self, index: int) -> dict:
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        state = WidgetState(id=self.picker_id, string_value=self.options[index])
        result = await self.run(_rerun(widgets=[state]))
        result["picked"] = self.options[index]
        return result

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


def _complete(result: dict, title: str | None = None) -> bool:
    footer = result.get("footer") or ""
    return not result["errors"] and footer.startswith("Page complete: ") and (title is None or f": {title} (" in footer)


def _stats(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0}
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    return {"n": len(values), "median": round(statistics.median(values), 3), "p90": round(p90, 3),
            "max": round(values[-1], 3)}  # fmt: skip


async def one_round(url: str, n: int, offset: int, port: int) -> dict:
    """n sessions open the page, then all pick at once."""
    visitors = [Visitor(url) for _ in range(n)]
    await asyncio.gather(*(v.connect() for v in visitors))
    first = await asyncio.gather(*(v.run(_rerun()) for v in visitors))
    options = visitors[0].options
    rss_open = server_rss_mb(port)
    peak = [rss_open or 0.0]
    done = asyncio.Event()

    async def sample():
        while not done.is_set():
            peak[0] = max(peak[0], server_rss_mb(port) or 0.0)
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    default = next((i for i, o in enumerate(options) if (first[0]["footer"] or "").find(o.split(" · ")[0]) >= 0), -1)
    choices = [i for i in range(len(options)) if i != default]
    picks = await asyncio.gather(*(v.pick(choices[(offset + k) % len(choices)]) for k, v in enumerate(visitors)))
    done.set()
    await sampler
    await asyncio.gather(*(v.close() for v in visitors))
    for p in picks:
        p["complete"] = _complete(p, p["picked"].split(" · ")[0])
    return {
        "first_page": [round(r["seconds"], 3) for r in first],
        "first_page_complete": sum(_complete(r) for r in first),
        "picks": [_rounded(p) for p in picks],
        "server_ms": [_footer_ms(p["footer"]) for p in picks],
        "rss_mb_open": rss_open,
        "rss_mb_peak": round(peak[0], 1),
    }


def _rounded(pick: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in pick.items() if k != "footer"}


def _footer_ms(footer: str | None) -> float | None:
    try:
        return float(footer.rsplit("computed in ", 1)[1].split(" ms")[0])
    except (AttributeError, IndexError, ValueError):
        return None


async def main_async(args) -> dict:
    with serve_app(log_path=Path(args.log)) as url:
        port = int(url.rsplit(":", 1)[1])
        warm = Visitor(url)  # the first visitor after a start pays for loading the model: not a pick
        await warm.connect()
        await warm.run(_rerun())
        await warm.close()
        rss_idle = server_rss_mb(port)
        rounds = [await one_round(url, args.sessions, r * args.sessions, port) for r in range(args.rounds)]
        rss_end = server_rss_mb(port)
    picks = [p for r in rounds for p in r["picks"]]
    summary = {
        "sessions_per_round": args.sessions,
        "rounds": args.rounds,
        "picks_complete": f"{sum(p['complete'] for p in picks)}/{len(picks)}",
        "pick_server_s": _stats([p["seconds"] for p in picks]),
        "pick_server_s_round": [_stats([p["seconds"] for p in r["picks"]]) for r in rounds],
        "pick_script_ms": _stats([m for r in rounds for m in r["server_ms"] if m is not None]),
        "first_page_s": _stats([s for r in rounds for s in r["first_page"]]),
        "rss_mb": {"idle": rss_idle, "peak": max(r["rss_mb_peak"] for r in rounds), "end": rss_end},
        "target": "median pick server time <= 3 s with 20 concurrent sessions, none fails",
    }
    summary["target_met"] = summary["pick_server_s"].get("median", 1e9) <= 3.0 and all(p["complete"] for p in picks)
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "load_before": os.getloadavg()[0],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "summary": summary,
            "rounds": rounds}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="sets of sessions, one after the other")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--log", default="/tmp/bench_app_ws_server.log", help="the server's output")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    done, total = result["summary"]["picks_complete"].split("/")
    return 0 if done == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
