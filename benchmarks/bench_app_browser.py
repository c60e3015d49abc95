"""How fast the app feels: from picking a gallery crystal to a complete page, in a real browser.

Starts ``streamlit run app/serve.py`` on a free port, opens it in headless Chromium
(playwright with /usr/bin/chromium), picks every gallery crystal with at most
``--max-atoms`` atoms ``--repeats`` times, and measures the time from the click on the
crystal's name until the page shows that crystal's prediction numbers, its drawn 3D
canvas and all of its routing charts. The first pick of each crystal computes its
results ("cold"); later picks hit the cache ("warm"). Prints a table and writes
``benchmarks/results/app_browser.json``.

    python benchmarks/bench_app_browser.py [--repeats 3] [--max-atoms 30]

tests/test_browser.py uses the helpers here (serve_app, launch_chromium, wait_for_complete_page).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "app_browser.json"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
SERVE_SCRIPT = "app/serve.py"  # the README's command: the page (app/Home.py), ready before it answers
VIEWER_TITLE = "Interactive 3D view of the crystal"  # the viewer iframe's title (app/viewer.py)

# True once the page shows `title` completely: the footer (last element of the script),
# prediction numbers with units, the 3D view of this crystal drawn on its canvas, and at
# least five routing charts whose layout.meta names this crystal's content hash.
COMPLETE_PAGE_JS = """
({title, digest, viewerTitle}) => {
  const captions = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')].map(e => e.innerText);
  if (!captions.some(t => t.startsWith(`Page complete: ${title} (`))) return false;
  const metrics = [...document.querySelectorAll('[data-testid="stMetricValue"]')].map(e => e.innerText.trim());
  if (!metrics.some(t => / eV$/.test(t)) || !metrics.some(t => / eV\\/atom$/.test(t))) return false;
  const frame = [...document.querySelectorAll('iframe')].find(f => f.title === viewerTitle);
  const body = frame && frame.contentDocument && frame.contentDocument.body;
  if (!body || body.getAttribute('data-crystal') !== title) return false;
  if (body.getAttribute('data-viewer-ready') !== '1' || !body.querySelector('canvas')) return false;
  // the crystal's routing charts carry its digest; other charts (the library's parity plots) carry none
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  if (plots.some(p => !p.querySelector('.main-svg') || !p.layout)) return false;
  const charts = plots.filter(p => p.layout.meta && p.layout.meta.crystal !== undefined);
  return charts.length >= 5 && charts.every(p => p.layout.meta.crystal === digest);
}
"""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(
    port: int | None = None,
    timeout_s: float = 120.0,
    log_path: Path | None = None,
    env: dict | None = None,
    script: str = SERVE_SCRIPT,
) -> Iterator[str]:
    """Run ``streamlit run app/serve.py`` (the README's command; ``script``: another page or launcher) on
    ``port`` (default: a free one); yield its URL once the server answers.

    The server's output goes to ``log_path`` when given; ``env`` sets environment variables (None
    removes one: ``{"OMP_NUM_THREADS": None, "SEN_THREADS": "auto"}`` gives torch its default threads).
    """
    port = port or free_port()
    base = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env = {k: v for k, v in {**base, **(env or {})}.items() if v is not None}  # None: remove the variable
    command = [
        sys.executable, "-m", "streamlit", "run", script,
        "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    log = open(log_path, "w+b") if log_path is not None else tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer on {url} within {timeout_s:.0f} s:\n{_tail(log)}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _tail(log, n: int = 3000) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-n:]


def launch_chromium(playwright):
    """Headless Debian Chromium with the flags the project uses everywhere."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def digest_of(path_or_bytes: Path | bytes) -> str:
    """SHA-256 of a file's bytes: the app's cache key, written into every chart's layout.meta."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return hashlib.sha256(data).hexdigest()


def wait_for_complete_page(page, title: str, digest: str, timeout_ms: float = 60_000) -> None:
    """Block until the page shows ``title`` completely (see COMPLETE_PAGE_JS)."""
    page.wait_for_function(
        COMPLETE_PAGE_JS, arg={"title": title, "digest": digest, "viewerTitle": VIEWER_TITLE}, timeout=timeout_ms
    )


def pick_example(page, name: str, label: str) -> float:
    """Choose a gallery crystal in the sidebar; return the time of the final click (perf_counter)."""
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.keyboard.type(name[:6])  # filter the list, so the option is on screen
    option = page.get_by_role("option", name=label, exact=True)
    option.wait_for(state="visible")
    started = time.perf_counter()
    option.click()
    return started


def server_ms(page) -> float | None:
    """The page's own "computed in N ms" (time spent in the Python script)."""
    text = page.locator('[data-testid="stCaptionContainer"]', has_text="Page complete:").last.inner_text()
    try:
        return float(text.rsplit("computed in ", 1)[1].split(" ms")[0])
    except (IndexError, ValueError):
        return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _stats(values: list[float]) -> dict:
    if not values:
        return {}
    return {
        "n": len(values),
        "median_s": round(statistics.median(values), 3),
        "p90_s": round(_percentile(values, 0.9), 3),
        "max_s": round(max(values), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="picks per crystal (default 3)")
    parser.add_argument("--max-atoms", type=int, default=30, help="largest crystal to include (default 30)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--script", default=SERVE_SCRIPT, help="what `streamlit run` starts (default app/serve.py; app/Home.py: no warm-up)"
    )
    parser.add_argument(
        "--sen-threads",
        default=None,
        help='SEN_THREADS for the server (default: unset, one thread); "auto": torch\'s own',
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from app.gallery import default_index, load_gallery
    from sen.io import read_structure

    gallery = load_gallery()
    sizes = {e.file: len(read_structure(e.path)) for e in gallery}
    chosen = [e for e in gallery if sizes[e.file] <= args.max_atoms]
    opening = gallery[default_index(gallery)]
    runs: list[dict] = []
    load_before = os.getloadavg()
    server_env = None
    if args.sen_threads is not None:  # "auto" also lifts the OMP_NUM_THREADS=1 that serve_app sets
        server_env = {"SEN_THREADS": args.sen_threads}
        if args.sen_threads.lower() in ("auto", "0"):
            server_env.update(OMP_NUM_THREADS=None, MKL_NUM_THREADS=None)
    with serve_app(env=server_env, script=args.script) as url, sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        started = time.perf_counter()
        page.goto(url)
        wait_for_complete_page(page, opening.name, digest_of(opening.path), timeout_ms=120_000)
        first_page_s = time.perf_counter() - started
        print(f"first page ({opening.name}): {first_page_s:.2f} s after navigation (server start excluded)")
        previous = opening.file
        for rep in range(args.repeats):
            for example in chosen:
                if example.file == previous:  # picking the shown crystal again would change nothing
                    continue
                started = pick_example(page, example.name, example.label)
                wait_for_complete_page(page, example.name, digest_of(example.path))
                seconds = time.perf_counter() - started
                cold = not any(r["file"] == example.file for r in runs) and example.file != opening.file
                runs.append(
                    {
                        "file": example.file,
                        "name": example.name,
                        "atoms": sizes[example.file],
                        "repeat": rep,
                        "cold": cold,
                        "seconds": round(seconds, 3),
                        "server_ms": server_ms(page),
                    }
                )
                previous = example.file
        # A second visitor: the server is warm (imports, model, cached example).
        visitor = browser.new_page(viewport={"width": 1400, "height": 1000})
        started = time.perf_counter()
        visitor.goto(url)
        wait_for_complete_page(visitor, opening.name, digest_of(opening.path))
        second_visit_s = time.perf_counter() - started
        print(f"page for a second visitor: {second_visit_s:.2f} s after navigation")
        chromium_version = browser.version
        browser.close()
    load_after = os.getloadavg()

    per_crystal = {}
    print(f"\n{'crystal':<44} {'atoms':>5} {'median s':>9} {'p90 s':>7} {'max s':>7}")
    for example in chosen:
        times = [r["seconds"] for r in runs if r["file"] == example.file]
        stats = _stats(times)
        per_crystal[example.name] = {"atoms": sizes[example.file], **stats}
        if stats:
            print(
                f"{example.name:<44} {sizes[example.file]:>5} {stats['median_s']:>9.3f} "
                f"{stats['p90_s']:>7.3f} {stats['max_s']:>7.3f}"
            )
    summary = {
        "all": _stats([r["seconds"] for r in runs]),
        "cold": _stats([r["seconds"] for r in runs if r["cold"]]),
        "warm": _stats([r["seconds"] for r in runs if not r["cold"]]),
        "under_1.5_s_fraction": round(sum(r["seconds"] < 1.5 for r in runs) / max(1, len(runs)), 3),
    }
    for key in ("all", "cold", "warm"):
        s = summary[key]
        if s:
            print(
                f"{key:<5} n={s['n']:<3} median {s['median_s']:.3f} s  p90 {s['p90_s']:.3f} s  max {s['max_s']:.3f} s"
            )
    print(f"picks under 1.5 s: {summary['under_1.5_s_fraction']:.0%}")

    result = {
        "what": "seconds from clicking a gallery crystal to prediction numbers + drawn 3D canvas + routing charts",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "python": platform.python_version(),
            "chromium": chromium_version,
        },
        "settings": {
            "repeats": args.repeats,
            "max_atoms": args.max_atoms,
            "viewport": "1400x1000",
            "sen_threads": args.sen_threads,
            "script": args.script,
        },
        "first_page_s": round(first_page_s, 3),  # first visitor after a server start (imports, model load)
        "second_visit_s": round(second_visit_s, 3),
        "summary": summary,
        "per_crystal": per_crystal,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
