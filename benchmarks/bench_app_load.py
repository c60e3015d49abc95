"""Many visitors at once: 20 concurrent sessions in headless Chromium against one app server.

Starts ``streamlit run app/serve.py`` (serve_app from bench_app_browser.py), opens ``--sessions``
pages in one headless Chromium (one browser context each), waits until every page shows the
opening crystal, then lets all of them act at the same moment: most pick a different gallery
crystal, the others upload a file whose bytes are new to the server (so its results are computed,
not cached). For each session it measures the time from its action to a complete result (the
page's prediction numbers, drawn 3D canvas and routing charts, as in bench_app_browser.py) and
splits it into

* server time: the script's own "computed in N ms" (Streamlit's rerun, from the footer), and the
  time to the last websocket message the server sent after the action (script + queueing +
  transfer);
* client time: from that last websocket message to the complete page (rendering in the browser).

It also records the server's resident memory (RSS, with its children) before the visitors arrive,
after they have all opened the page, and at the end. Prints a summary and writes
``benchmarks/results/app_load.json``.

    python benchmarks/bench_app_load.py [--sessions 20] [--uploads 6]
    python benchmarks/bench_app_load.py --hostile 20 --out benchmarks/results/app_load_hostile.json

``--hostile N`` adds N sessions that each upload a file sen.io must refuse (tests/data/io_regressions):
each must get its one-line reason with the rest of the page working, every honest session must still
complete, and the server's peak memory while they act is recorded.
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

from benchmarks.bench_app_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    COMPLETE_PAGE_JS,
    VIEWER_TITLE,
    digest_of,
    serve_app,
)

RESULTS = ROOT / "benchmarks" / "results" / "app_load.json"
TIMEOUT_MS = 300_000


def server_rss_mb(port: int) -> float | None:
    """Memory (MB) of the process listening on ``port`` and its children (the prediction workers).

    Proportional set size where Linux reports it: a forked worker shares most of its pages with the
    server, and adding up resident sizes would count them once per worker. A worker that ends while it
    is being measured is left out.
    """
    import psutil

    listening = {c.pid for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}  # fmt: skip
    for pid in sorted(listening):  # a forked worker holds the listening socket too: the server is its parent
        try:
            process = psutil.Process(pid)
            if process.ppid() in listening:
                continue
            members = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        total = 0
        for p in members:
            try:
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return round(total / 2**20, 1)
    return None


async def wait_complete(page, title: str, digest: str) -> None:
    arg = {"title": title, "digest": digest, "viewerTitle": VIEWER_TITLE}
    await page.wait_for_function(COMPLETE_PAGE_JS, arg=arg, timeout=TIMEOUT_MS, polling=50)


async def footer_ms(page) -> float | None:
    text = await page.locator('[data-testid="stCaptionContainer"]', has_text="Page complete:").last.inner_text()
    try:
        return float(text.rsplit("computed in ", 1)[1].split(" ms")[0])
    except (IndexError, ValueError):
        return None


class Session:
    """One visitor: a page, its websocket frames' arrival times, and what it does."""

    def __init__(self, index: int, action: dict):
        self.index = index
        self.action = action  # {"kind": "pick", "example": Example} or {"kind": "upload", "name", "data"}
        self.frames: list[float] = []
        self.result: dict = {"session": index, "action": action["kind"], "crystal": action["title"]}

    async def open(self, browser, url: str, opening) -> None:
        self.context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = await self.context.new_page()
        self.page.on("websocket", lambda ws: ws.on("framereceived", lambda _: self.frames.append(time.perf_counter())))
        await self.page.goto(url, timeout=TIMEOUT_MS)
        await wait_complete(self.page, opening.name, digest_of(opening.path))

    async def prepare(self) -> None:
        """Everything before the measured click: open the gallery list and filter it."""
        if self.action["kind"] == "pick":
            example = self.action["example"]
            await self.page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
            await self.page.keyboard.type(example.name[:6])
            self.option = self.page.get_by_role("option", name=example.label, exact=True)
            await self.option.wait_for(state="visible", timeout=TIMEOUT_MS)

    async def act(self, start: asyncio.Event) -> None:
        await start.wait()
        started = time.perf_counter()
        try:
            if self.action["kind"] == "pick":
                await self.option.click()
                example = self.action["example"]
                await wait_complete(self.page, example.name, digest_of(example.path))
            elif self.action["kind"] == "hostile":  # the page must answer with its one-line reason
                upload = {"name": self.action["title"], "mimeType": "text/plain", "buffer": self.action["data"]}
                await self.page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(files=[upload])
                await self.page.get_by_text(self.action["title"]).first.wait_for(timeout=TIMEOUT_MS)
                await self.page.locator('[data-testid="stAlertContentError"], [data-testid="stAlertContentWarning"]'
                                        ).first.wait_for(timeout=TIMEOUT_MS)  # fmt: skip
            else:
                upload = {"name": self.action["title"], "mimeType": "chemical/x-cif", "buffer": self.action["data"]}
                await self.page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(files=[upload])
                await wait_complete(self.page, self.action["title"], digest_of(self.action["data"]))
            done = time.perf_counter()
            last_frame = max((t for t in self.frames if t >= started), default=None)
            errors = await self.page.locator('[data-testid="stAlertContentError"]').count()
            if self.action["kind"] == "hostile":  # refused, as it should be; the rest of the page kept working
                errors = 0 if await self.page.locator('[data-testid="stException"]').count() == 0 else 1
            self.result.update(
                ok=errors == 0,
                errors_on_page=errors,
                seconds=round(done - started, 3),
                server_script_ms=await footer_ms(self.page),
                to_last_server_message_s=round(last_frame - started, 3) if last_frame else None,
                client_after_last_message_s=round(done - last_frame, 3) if last_frame else None,
            )
        except Exception as exc:  # a session that fails is counted, not fatal
            self.result.update(ok=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


HOSTILE = ROOT / "tests" / "data" / "io_regressions"  # files sen.io must refuse (see tests/test_io.py)


def hostile_actions(n: int) -> list[dict]:
    """``n`` uploads of hostile files (exploding symmetry, huge counts, far coordinates, object decoding, ...)."""
    from sen.errors import StructureError
    from sen.io import read_structure

    def refused(path: Path) -> bool:  # some regression files are odd but valid crystals: not hostile here
        try:
            read_structure(path)
        except StructureError:
            return True
        return False

    files = sorted(p for p in HOSTILE.iterdir() if p.is_file() and refused(p))
    return [{"kind": "hostile", "title": f"hostile_{k:02d}_{files[k % len(files)].name}",
             "data": files[k % len(files)].read_bytes()} for k in range(n)]  # fmt: skip


def actions(n_sessions: int, n_uploads: int) -> list[dict]:
    """A different gallery crystal for each picking session; new bytes for each upload."""
    from app.gallery import default_index, load_gallery

    gallery = load_gallery()
    others = [e for i, e in enumerate(gallery) if i != default_index(gallery)]
    picks = [{"kind": "pick", "example": e, "title": e.name} for e in others[: n_sessions - n_uploads]]
    uploads = []
    for k, example in enumerate(others[: n_sessions - len(picks)]):
        data = f"# load-test upload {k} {time.time()}\n".encode() + example.path.read_bytes()
        uploads.append({"kind": "upload", "title": f"upload_{k:02d}_{example.file}", "data": data})
    return picks + uploads


def stats(values: list[float]) -> dict:
    if not values:
        return {}
    return {"n": len(values), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


async def run(args) -> dict:
    from playwright.async_api import async_playwright

    from app.gallery import default_index, load_gallery

    gallery = load_gallery()
    opening = gallery[default_index(gallery)]
    plan = actions(args.sessions, args.uploads) + hostile_actions(args.hostile)
    log_path = Path(args.log)
    with serve_app(log_path=log_path) as url:
        port = int(url.rsplit(":", 1)[1])
        rss_start = server_rss_mb(port)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            sessions = [Session(i, action) for i, action in enumerate(plan)]
            opened = time.perf_counter()
            await asyncio.gather(*(s.open(browser, url, opening) for s in sessions))
            open_s = time.perf_counter() - opened
            await asyncio.gather(*(s.prepare() for s in sessions))
            rss_open = server_rss_mb(port)
            load_before = os.getloadavg()
            start = asyncio.Event()
            tasks = [asyncio.create_task(s.act(start)) for s in sessions]
            peak = {"mb": rss_open or 0.0}

            async def sample() -> None:  # the server's peak memory while the sessions act
                while not all(t.done() for t in tasks):
                    peak["mb"] = max(peak["mb"], server_rss_mb(port) or 0.0)
                    await asyncio.sleep(0.25)

            await asyncio.sleep(0.2)
            start.set()
            await asyncio.gather(*tasks, sample())
            load_after = os.getloadavg()
            rss_end = server_rss_mb(port)
            version = browser.version
            await browser.close()
    results = [s.result for s in sessions]
    ok = [r for r in results if r.get("ok")]
    honest = [r for r in ok if r["action"] != "hostile"]
    return {
        "what": "concurrent sessions, one server: time from each session's action to its complete result page",
        "command": "python benchmarks/bench_app_load.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cores": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "python": platform.python_version(),
            "chromium": version,
        },
        "sessions": len(results),
        "completed_without_error": len(ok),
        "all_pages_opened_s": round(open_s, 3),
        "seconds_to_complete_result": stats([r["seconds"] for r in honest]),
        "server_script_ms": stats([r["server_script_ms"] for r in honest if r.get("server_script_ms") is not None]),
        "hostile_seconds_to_refusal": stats([r["seconds"] for r in ok if r["action"] == "hostile"]),
        "to_last_server_message_s": stats([r["to_last_server_message_s"] for r in ok if r["to_last_server_message_s"]]),
        "client_after_last_message_s": stats(
            [r["client_after_last_message_s"] for r in ok if r["client_after_last_message_s"] is not None]
        ),
        "server_rss_mb": {"before_visitors": rss_start, "all_pages_open": rss_open, "after_all_results": rss_end,
                          "peak_while_acting": peak["mb"]},
        "hostile_sessions": {"n": args.hostile, "refused_cleanly": sum(
            1 for r in results if r["action"] == "hostile" and r.get("ok"))},
        "honest_sessions_completed": sum(1 for r in ok if r["action"] != "hostile"),
        "per_session": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--uploads", type=int, default=6, help="sessions that upload a file instead of picking")
    parser.add_argument("--hostile", type=int, default=0, help="extra sessions that each upload a hostile file")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--log", default="/tmp/bench_app_load_server.log", help="the server's output")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(f"{result['completed_without_error']}/{result['sessions']} sessions completed without error")
    for key in ("seconds_to_complete_result", "to_last_server_message_s", "client_after_last_message_s"):
        print(f"{key}: {result[key]}")
    print(f"server script ms: {result['server_script_ms']}")
    print(f"server RSS MB: {result['server_rss_mb']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    return 0 if result["completed_without_error"] == result["sessions"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
