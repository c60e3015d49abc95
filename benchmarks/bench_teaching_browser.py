"""How fast teaching feels: every "Teach symmetry" interaction, timed to a complete page in a real browser.

Starts ``streamlit run app/serve.py`` on a free port (bench_app_browser.serve_app), opens every gallery
crystal with at most ``--max-atoms`` atoms (``/?example=...``, a fresh session) ``--repeats`` times in
headless Chromium, and times, one after the other on that page:

* ``atom hover`` and ``atom click``: the mouse on the most isolated drawn atom, until the 3D view shows
  its details (hover) or pins them (click); no rerun;
* ``table select``: a click on the row marker of the atom table's second row, until the page has rerun
  and the new 3D view is drawn with that atom highlighted;
* ``elements on`` / ``elements off``: the sidebar's "Show symmetry elements" toggle;
* ``displace``: "Distance (Å)" 0.1 for the first orbit (chosen first, untimed), along [0 0 1];
* ``strain``: "Strain (%)" 2 along c (the mode chosen first, untimed);
* ``rattle``: "Rattle every atom by up to (Å)" 0.05;
* ``substitute``: "Replace" the first element (by K, the default), so the changes add up;
* ``compare``: "Compare with" the next gallery crystal, until its orbit routing chart is drawn.

A rerun counts as complete when Streamlit reports the script is not running (``data-test-script-state``
on ``stApp``), the footer and prediction numbers are there, every Plotly chart is drawn, and the rerun is
seen to have happened: the 3D view has drawn a new scene (its ``data-render`` count moved on; with the
highlighted atom or the symmetry elements when the interaction asks for them), or, for the comparison (which leaves the
view as it is), the compared crystal's routing chart is drawn. Writes the median, p90 and max of each
interaction, and whether they are within 1 s, to ``benchmarks/results/teaching_browser.json``.

    python benchmarks/bench_teaching_browser.py [--repeats 3] [--max-atoms 30] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_app_browser import (  # noqa: E402
    VIEWER_TITLE,
    _stats,
    digest_of,
    launch_chromium,
    serve_app,
    server_ms,
    wait_for_complete_page,
)

RESULTS = ROOT / "benchmarks" / "results" / "teaching_browser.json"
INTERACTIONS = ("atom hover", "atom click", "table select", "elements on", "elements off", "displace", "strain",
                "rattle", "substitute", "compare")  # fmt: skip
TIMEOUT_MS = 90_000

#: Screen position of every drawn atom, relative to the canvas (3Dmol's modelToScreen is page-relative).
ATOM_SCREEN_JS = """() => {
  const v = viewer_sen, box = v.getCanvas().getBoundingClientRect();
  return v.getModel().selectedAtoms({}).map(a => {
    const p = v.modelToScreen({x: a.x, y: a.y, z: a.z});
    return [a.index, p.x - box.left - window.pageXOffset, p.y - box.top - window.pageYOffset];
  });
}"""

# Before an interaction: watch Streamlit's script state, and note which drawing the 3D view shows (data-render).
ARM_JS = """(viewerTitle) => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__senSawRun = false; window.__senRunDone = false;
  if (window.__senObserver) window.__senObserver.disconnect();
  window.__senObserver = new MutationObserver(records => {
    const state = app.getAttribute('data-test-script-state');
    // the records' old values: a short run can start and end before this callback runs
    if (state === 'running' || records.some(r => r.oldValue === 'running')) window.__senSawRun = true;
    if (window.__senSawRun && state === 'notRunning') window.__senRunDone = true;
  });
  window.__senObserver.observe(app, {attributes: true, attributeOldValue: true,
                                     attributeFilter: ['data-test-script-state']});
  const frame = [...document.querySelectorAll('iframe')].find(f => f.title === viewerTitle);
  const body = frame && frame.contentDocument && frame.contentDocument.body;
  window.__senRenderBefore = body ? body.getAttribute('data-render') : null;
}"""

# After it: what the page still lacks ('' once the rerun finished and the page is complete; see the module
# docstring). A timeout reports the last reason.
RERUN_MISSING_JS = """({viewerTitle, viewSelector, digest, newView}) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (app.getAttribute('data-test-script-state') !== 'notRunning') return 'script running';
  if (document.querySelector('[data-stale="true"]')) return 'stale elements';
  const captions = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')].map(e => e.innerText);
  if (!captions.some(t => t.startsWith('Page complete: '))) return 'no footer';
  const metrics = [...document.querySelectorAll('[data-testid="stMetricValue"]')].map(e => e.innerText.trim());
  if (!metrics.some(t => / eV$/.test(t)) || !metrics.some(t => / eV\\/atom$/.test(t))) return 'no predictions';
  const frame = [...document.querySelectorAll('iframe')].find(f => f.title === viewerTitle);
  const body = frame && frame.contentDocument && frame.contentDocument.body;
  if (!body) return 'no 3D view';
  if (newView && body.getAttribute('data-render') === window.__senRenderBefore) return 'the old 3D view';
  if (body.getAttribute('data-viewer-ready') !== '1' || !body.querySelector('canvas')) return '3D view not drawn';
  if (viewSelector && !body.matches(viewSelector)) return `3D view without ${viewSelector}`;
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  if (plots.some(p => !p.querySelector('.main-svg') || !p.layout)) return 'charts not drawn';
  const charts = plots.filter(p => p.layout.meta && p.layout.meta.crystal !== undefined);
  if (charts.length < 5) return `${charts.length} charts`;
  if (digest && !charts.some(p => p.layout.meta.crystal === digest)) return 'no chart of the compared crystal';
  // a new 3D view or the compared crystal's chart shows the rerun happened; else Streamlit must have said so
  // (a quick rerun can go from running to finished within one render, so that is not always seen)
  return newView || digest || window.__senRunDone ? '' : 'no finished rerun seen';
}"""
RERUN_COMPLETE_JS = f"args => ({RERUN_MISSING_JS})(args) === ''"


def most_isolated_atom(frame) -> tuple[int, float, float]:
    """(drawn index, x, y on the canvas) of the drawn atom farthest on screen from all others."""
    atoms = frame.evaluate(ATOM_SCREEN_JS)
    if len(atoms) == 1:
        return tuple(atoms[0])
    return tuple(max(atoms, key=lambda a: min(math.dist(a[1:], b[1:]) for b in atoms if b is not a)))


def viewer_frame(page):
    """The 3D view's frame (the same one for the whole visit: new scenes are drawn in it)."""
    return page.locator(f'iframe[title="{VIEWER_TITLE}"]').element_handle().content_frame()


def timed_rerun(
    page, action: Callable[[], None], view_selector: str = "", digest: str = "", new_view: bool = True
) -> float:
    """Seconds from ``action`` (the user's last input) to a complete page after the rerun it causes
    (``new_view``: one whose 3D view has drawn a new scene, for interactions that change the view)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    arg = {"viewerTitle": VIEWER_TITLE, "viewSelector": view_selector, "digest": digest, "newView": new_view}
    page.evaluate(ARM_JS, VIEWER_TITLE)
    started = time.perf_counter()
    action()
    try:
        page.wait_for_function(RERUN_COMPLETE_JS, arg=arg, timeout=TIMEOUT_MS, polling="raf")
    except PlaywrightTimeout as exc:
        raise PlaywrightTimeout(f"{exc.message.splitlines()[0]} ({page.evaluate(RERUN_MISSING_JS, arg)})") from exc
    return time.perf_counter() - started


def untimed_rerun(page, action: Callable[[], None]) -> None:
    """Run ``action`` (a choice that changes nothing yet) and wait for its rerun to finish."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.evaluate(ARM_JS, VIEWER_TITLE)
    action()
    try:
        page.wait_for_function("() => window.__senRunDone === true", timeout=10_000)
    except PlaywrightTimeout:  # a quick rerun may never show as running (see RERUN_MISSING_JS)
        page.wait_for_timeout(500)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]').getAttribute('data-test-script-state') "
        "=== 'notRunning'",
        timeout=TIMEOUT_MS,
    )


def _sidebar(page):
    return page.locator('[data-testid="stSidebar"]')


def choose(page, where, label: str, option: str | None = None, nth: int | None = None) -> Callable[[], None]:
    """An action that picks ``option`` (or the ``nth`` option) of the selectbox labelled ``label``."""

    def act() -> None:
        box = where.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
        box.scroll_into_view_if_needed()
        box.click()
        options = page.get_by_role("option")
        target = options.nth(nth) if option is None else page.get_by_role("option", name=option, exact=True)
        target.wait_for(state="visible")
        target.click()

    return act


def enter_number(where, label: str, value: str) -> Callable[[], None]:
    """An action that types ``value`` into the number input labelled ``label`` and commits it (Enter)."""

    def act() -> None:
        field = where.get_by_label(label, exact=True)
        field.scroll_into_view_if_needed()
        field.fill(value)
        field.press("Enter")

    return act


def hover_and_click(page) -> dict[str, float]:
    """Seconds until the details of the most isolated atom show on hover, and are pinned on click."""
    frame = viewer_frame(page)
    drawn, x, y = most_isolated_atom(frame)
    canvas = page.frame_locator(f'iframe[title="{VIEWER_TITLE}"]').locator("canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] - 3, box["y"] + box["height"] - 3)  # start off any atom
    frame.wait_for_selector("body:not([data-atom-site])", state="attached", timeout=TIMEOUT_MS)
    started = time.perf_counter()
    page.mouse.move(box["x"] + x, box["y"] + y)
    frame.wait_for_selector(f'body[data-atom-drawn="{drawn}"]', state="attached", timeout=TIMEOUT_MS)
    hover = time.perf_counter() - started
    started = time.perf_counter()
    page.mouse.click(box["x"] + x, box["y"] + y)
    frame.wait_for_selector("body[data-atom-pinned]", state="attached", timeout=TIMEOUT_MS)
    click = time.perf_counter() - started
    page.mouse.move(5, 5)
    return {"atom hover": hover, "atom click": click}


def _steps(page, other) -> list[tuple[str | None, Callable[[], float | None]]]:
    """The interactions in order, as (name, step); a step named None is a choice that is not timed."""
    from sen.teaching import STRAIN_MODES

    sidebar, main = _sidebar(page), page.locator('[data-testid="stMain"]')
    toggle = page.get_by_text("Show symmetry elements")

    def select_row() -> None:
        table = page.locator('[data-testid="stDataFrame"]').filter(has_text="site sym.").first
        table.scroll_into_view_if_needed()
        table.click(position={"x": 15, "y": 35 * 2 + 17})  # the row marker of the second row

    return [
        ("table select", lambda: timed_rerun(page, select_row, 'body[data-highlighted-site="1"]')),
        ("elements on", lambda: timed_rerun(page, toggle.click, "body[data-symmetry-elements]")),
        ("elements off", lambda: timed_rerun(page, toggle.click, "body:not([data-symmetry-elements])")),
        (None, lambda: untimed_rerun(page, choose(page, sidebar, "Move the atoms of orbit", nth=1))),
        ("displace", lambda: timed_rerun(page, enter_number(sidebar, "Distance (Å)", "0.1"))),
        (None, lambda: untimed_rerun(page, choose(page, sidebar, "Strain the cell", option=STRAIN_MODES["c"]))),
        ("strain", lambda: timed_rerun(page, enter_number(sidebar, "Strain (%)", "2"))),
        ("rattle", lambda: timed_rerun(page, enter_number(sidebar, "Rattle every atom by up to (Å)", "0.05"))),
        ("substitute", lambda: timed_rerun(page, choose(page, sidebar, "Replace", nth=1))),
        ("compare", lambda: timed_rerun(page, choose(page, main, "Compare with", option=other.name),
                                        digest=digest_of(other.path), new_view=False)),
    ]  # fmt: skip


def one_crystal(page, url: str, example, other) -> dict:
    """Open ``example`` in a fresh session and time every interaction once; ``other``: the crystal to compare.
    An interaction that does not complete in time is recorded under ``failed`` and ends this crystal's run."""
    from playwright.sync_api import Error as PlaywrightError

    page.goto(f"{url}/?example={Path(example.file).stem}")
    wait_for_complete_page(page, example.name, digest_of(example.path), timeout_ms=TIMEOUT_MS)
    viewer_frame(page).wait_for_selector("body[data-atom-details]", state="attached", timeout=TIMEOUT_MS)
    times: dict = {}
    steps = [("atom hover and click", lambda: times.update(hover_and_click(page))), *_steps(page, other)]
    for k, (name, step) in enumerate(steps):
        try:
            seconds = step()
        except PlaywrightError as exc:
            label = name or f"the choice before {steps[k + 1][0]}"
            times["failed"] = f"{label}: {str(exc).splitlines()[0][:200]}"
            page.screenshot(
                path=str(Path(tempfile.gettempdir()) / f"teaching_browser_failed_{Path(example.file).stem}.png")
            )
            print(f"  {example.name}: {times['failed']}")
            break
        if name is not None and seconds is not None:
            times[name] = seconds
            times[f"{name} server_ms"] = server_ms(page)  # the script's own time for that rerun
    return times


def summarise(runs: list[dict]) -> dict:
    """Per interaction: n, median, p90 and max seconds, whether they are within 1 s, and the median time
    the script itself took for the reruns (the page's "computed in N ms")."""
    out = {}
    for name in INTERACTIONS:
        values = [r[name] for r in runs if r.get(name) is not None]
        stats = _stats(values)
        if stats:
            stats["median_within_1_s"] = stats["median_s"] <= 1.0
            stats["p90_within_1_s"] = stats["p90_s"] <= 1.0
            stats["fraction_within_1_s"] = round(sum(v <= 1.0 for v in values) / len(values), 3)
            server = [r[f"{name} server_ms"] for r in runs if r.get(f"{name} server_ms") is not None]
            if server and name not in ("atom hover", "atom click"):  # no rerun: the footer is the page's
                stats["server_median_ms"] = round(statistics.median(server), 1)
        out[name] = stats
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="times each crystal is opened (default 3)")
    parser.add_argument("--max-atoms", type=int, default=30, help="largest crystal to include (default 30)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N of those crystals")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    from app.gallery import load_gallery
    from sen.io import read_structure

    gallery = load_gallery()
    sizes = {e.file: len(read_structure(e.path)) for e in gallery}
    chosen = [e for e in gallery if sizes[e.file] <= args.max_atoms][: args.limit]
    runs: list[dict] = []
    loads = [os.getloadavg()]
    with serve_app() as url, sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for rep in range(args.repeats):
            for k, example in enumerate(chosen):
                other = chosen[(k + 1) % len(chosen)] if len(chosen) > 1 else gallery[0]
                try:
                    times = one_crystal(page, url, example, other)
                except PlaywrightError as exc:  # the page did not open
                    times = {"failed": f"opening the page: {str(exc).splitlines()[0][:200]}"}
                runs.append({"file": example.file, "atoms": sizes[example.file], "repeat": rep,
                             **{key: round(v, 3) if isinstance(v, float) else v for key, v in times.items()}})  # fmt: skip
                loads.append(os.getloadavg())
                print(f"{example.name:<44} " + " ".join(f"{n.split()[-1]} {times[n]:.2f}" for n in INTERACTIONS
                                                        if n in times) + f" {times.get('failed', '')}")  # fmt: skip
        chromium_version = browser.version
        browser.close()
    summary = summarise(runs)
    print(f"\n{'interaction':<14} {'n':>3} {'median s':>9} {'p90 s':>7} {'max s':>7} {'server ms':>9}  within 1 s")
    for name, s in summary.items():
        if s:
            server = f"{s['server_median_ms']:.0f}" if "server_median_ms" in s else "-"
            print(f"{name:<14} {s['n']:>3} {s['median_s']:>9.3f} {s['p90_s']:>7.3f} {s['max_s']:>7.3f} {server:>9}  "
                  f"median {'yes' if s['median_within_1_s'] else 'no'}, {s['fraction_within_1_s']:.0%} of runs")  # fmt: skip
    result = {
        "what": "seconds from each teaching interaction (sidebar controls, compare, symmetry-elements toggle, atom "
        "hover/click, atom-table selection) to a complete page, in headless Chromium",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in loads[0]],
            "load_average_after": [round(x, 2) for x in loads[-1]],
            "load_average_1min_max": round(max(x[0] for x in loads), 2),
            "python": platform.python_version(),
            "chromium": chromium_version,
        },
        "settings": {
            "repeats": args.repeats,
            "max_atoms": args.max_atoms,
            "crystals": [e.file for e in chosen],
            "viewport": "1400x1000",
        },  # fmt: skip
        "interactions": summary,
        "failures": [{"file": r["file"], "repeat": r["repeat"], "failed": r["failed"]} for r in runs if "failed" in r],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
