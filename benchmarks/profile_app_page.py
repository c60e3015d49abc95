"""Where a visitor's first page spends Chromium's main thread: a CDP CPU profile, summed by script.

Starts the app (``streamlit run app/serve.py``), opens the first page once (imports, model load, the
opening crystal's prediction cached), then profiles a second visitor from navigation to the complete page
(the same test of completeness as ``bench_app_browser.py``) and sums the sampled time by the script it ran
in and by function. Writes ``benchmarks/results/app_page_profile.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "app_page_profile.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--top", type=int, default=15, help="rows of each table")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_app_browser import digest_of, launch_chromium, serve_app, wait_for_complete_page
    from playwright.sync_api import sync_playwright

    from app.gallery import default_index, load_gallery

    gallery = load_gallery()
    opening = gallery[default_index(gallery)]
    with serve_app() as url, sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        wait_for_complete_page(page, opening.name, digest_of(opening.path), timeout_ms=120_000)
        page.close()
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        cdp = page.context.new_cdp_session(page)
        cdp.send("Profiler.enable")
        cdp.send("Profiler.setSamplingInterval", {"interval": 500})  # microseconds
        cdp.send("Profiler.start")
        started = time.perf_counter()
        page.goto(url)
        wait_for_complete_page(page, opening.name, digest_of(opening.path), timeout_ms=120_000)
        seconds = time.perf_counter() - started
        profile = cdp.send("Profiler.stop")["profile"]
        browser.close()
    nodes = {n["id"]: n["callFrame"] for n in profile["nodes"]}
    by_script: collections.Counter = collections.Counter()
    by_function: collections.Counter = collections.Counter()
    for sample, delta in zip(profile["samples"], profile["timeDeltas"], strict=False):
        frame = nodes[sample]
        script = frame["url"].rsplit("/", 1)[-1].split("?")[0] or "(native: " + (frame["functionName"] or "?") + ")"
        by_script[script] += delta
        by_function[f"{script} {frame['functionName'] or '(top level)'}"] += delta
    ms = lambda us: round(us / 1000, 1)  # noqa: E731
    result = {
        "what": "Chromium main-thread CPU profile of a second visitor's first page, ms by script and function",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "page_s": round(seconds, 2),
        "sampled_ms": ms(sum(by_script.values())),
        "by_script_ms": {k: ms(v) for k, v in by_script.most_common(args.top)},
        "by_function_ms": {k: ms(v) for k, v in by_function.most_common(args.top)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"page complete in {seconds:.2f} s; main thread sampled {result['sampled_ms']} ms")
    for k, v in result["by_script_ms"].items():
        print(f"{v:8.1f} ms  {k}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
