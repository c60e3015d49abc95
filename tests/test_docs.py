"""The documentation can be used as written.

* Every command in README.md's ``console`` / ``bash`` blocks either runs here, from the repository root,
  with the exit status and output the README promises, or is skipped below with the reason
  (a new README command fails :func:`test_every_readme_command_is_run_or_skipped` until it is listed).
* README.md's ``python`` block runs as a script.
* README.md fits in 8 KB and each model card in 5 KB.
* Every relative link (and its ``#anchor``) in the docs points to something that exists, and every
  repository path named in their code blocks exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CARDS = sorted((ROOT / "sen" / "models").glob("*/README.md"))
LINKED_DOCS = [README, *CARDS, ROOT / "benchmarks" / "README.md", ROOT / "docs" / "history.md"]
DATA = ROOT.parent / "shared" / "data" / "mp_crystals"  # the training data, outside the repository
TIMEOUT_S = 300

README_MAX_BYTES = 8 * 1024
CARD_MAX_BYTES = 5 * 1024

# Commands that are run, keyed by the command without its trailing comment:
# (expected exit status, strings the output must contain).
RUN = {
    "sen predict assets/examples/nacl_rocksalt.cif assets/examples/cu_fcc.cif": (
        0,
        ["assets/examples/nacl_rocksalt.cif", "NaCl", "Cu", "Fm-3m (225)", "band_gap_std_eV"],
    ),
    "sen symmetry assets/examples/lifepo4_olivine.cif --symprec 0.01": (
        0,
        ["Pnma (No. 62)", "orthorhombic", "Li 4a", "O 8d"],
    ),
    'echo "not a crystal" > /tmp/broken.cif && sen predict /tmp/broken.cif assets/examples/cu_fcc.cif': (
        1,
        ["error: /tmp/broken.cif:", "assets/examples/cu_fcc.cif", "Fm-3m (225)"],
    ),
    "sen train --help": (0, ["--config", "--init-from", "--train-on-val", "--cutoff", "--dropout"]),
    "sen screen assets/examples/*.cif --out /tmp/screen.csv --overwrite": (
        0,
        ["19 predicted, 0 failed", "wrote 19 rows to /tmp/screen.csv"],
    ),
    'sen library search "Li Fe P O" --gap 1:3': (0, ["LiFeP2O7", "crystals match"]),
    "sen library show mp-19017": (0, ["LiFePO4", "Pnma (62)", "training crystal"]),
}
# Run only where the training data is (it lives outside the repository), into a temporary folder
# instead of runs/ and .cache/ (this checkout is shared; the outputs are the same).
RUN_WITH_DATA = {
    "sen train --config configs/sen_mp.toml --limit 200 --epochs 1 --out runs/try": (0, []),
}
# Commands that are not run here, with the reason: any command starting with one of SKIP_PREFIXES,
# and the exact commands of SKIP.
SKIP_PREFIXES = {
    "python3 -m venv": "set-up: creates a virtual environment and installs from package registries "
    "(pip install, npm ci); CI runs the test command verbatim (.ci/run, tests/test_readme.py)",
    "streamlit run app/serve.py": "starts a server that runs until stopped; the app is tested by tests/test_app.py "
    "(AppTest) and tests/test_browser.py (headless Chromium)",
}
SKIP = {
    "sen train --config configs/sen_mp.toml": "trains on all 33,064 crystals for 100 minutes; the short "
    "--limit 200 --epochs 1 run above exercises the same command",
}


def _blocks(text: str, *langs: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S) if m.group(1) in langs]


def _strip_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line).strip()


def readme_commands() -> list[str]:
    """The commands of README.md's console blocks (``$ `` lines) and bash blocks, without comments."""
    text = README.read_text()
    commands = []
    for block in _blocks(text, "console"):
        commands += [_strip_comment(line[2:]) for line in block.splitlines() if line.startswith("$ ")]
    for block in _blocks(text, "bash"):
        commands += [_strip_comment(line) for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return commands


def _skip_reason(command: str) -> str | None:
    if command in SKIP:
        return SKIP[command]
    return next((reason for prefix, reason in SKIP_PREFIXES.items() if command.startswith(prefix)), None)


def _run(command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    bindir = str(Path(sys.executable).parent)  # the `sen` of this environment
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)  # fmt: skip


def test_readme_has_commands():
    assert len(readme_commands()) >= 8


def test_every_readme_command_is_run_or_skipped():
    unknown = [c for c in readme_commands() if c not in RUN and c not in RUN_WITH_DATA and _skip_reason(c) is None]
    assert not unknown, f"README commands neither run nor skipped (add them to RUN or SKIP in this file): {unknown}"


@pytest.mark.parametrize("command", [c for c in readme_commands() if c in RUN])
def test_readme_command_runs(command):
    status, wanted = RUN[command]
    done = _run(command)
    output = done.stdout + done.stderr
    assert done.returncode == status, output
    for text in wanted:
        assert text in output, f"{text!r} not in the output of {command!r}:\n{output}"
    assert "Traceback" not in output


@pytest.mark.skipif(not DATA.is_dir(), reason=f"no training data at {DATA}")
@pytest.mark.parametrize("command", [c for c in readme_commands() if c in RUN_WITH_DATA])
def test_readme_training_command_runs(command, tmp_path):
    status, wanted = RUN_WITH_DATA[command]
    moved = command.replace("--out runs/try", f"--out {tmp_path / 'try'}") + f" --cache-dir {tmp_path / 'cache'}"
    done = _run(moved + " --no-progress")
    assert done.returncode == status, done.stdout + done.stderr
    for name in ("best.pt", "last.pt", "log.csv", "split.json"):
        assert (tmp_path / "try" / name).is_file(), name


def test_readme_python_block_runs(tmp_path):
    (block,) = _blocks(README.read_text(), "python")
    script = tmp_path / "readme_example.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    for text in ("band_gap", "formation_energy_per_atom_std", "(5, 8)", "['Sr 1a', 'Ti 1b', 'O 3c', 'O 3c', 'O 3c']",
                 "Pm-3m"):  # fmt: skip
        assert text in done.stdout, done.stdout


def test_readme_fits_in_8_kb():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, over {README_MAX_BYTES}"


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.name)
def test_model_card_fits_in_5_kb(card):
    size = len(card.read_bytes())
    assert size <= CARD_MAX_BYTES, f"{card.relative_to(ROOT)} is {size} bytes, over {CARD_MAX_BYTES}"


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    slugs = set()
    for title in re.findall(r"^#+ +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("doc", LINKED_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    assert doc.is_file(), doc
    broken = []
    for link in _links(doc):
        if re.match(r"^[a-z]+:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(link)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link} (no such heading)")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links {broken}"


REPO_PATH = re.compile(r"(?<![\w./-])((?:sen|app|assets|benchmarks|configs|scripts|tests|docs)/[\w./-]*\w)")


@pytest.mark.parametrize("doc", LINKED_DOCS[:-1], ids=lambda p: str(p.relative_to(ROOT)))
def test_paths_in_code_blocks_exist(doc):
    """Scripts, configs and example files named in the current docs' commands exist (not runs/ or ../shared/)."""
    missing = []
    for block in _blocks(doc.read_text(), "bash", "console", "python"):
        for path in REPO_PATH.findall(block):
            if not (ROOT / path).exists():
                missing.append(path)
    assert not missing, f"{doc.relative_to(ROOT)}: {missing}"


def test_docs_name_the_package_models_folder():
    """The weights moved from models/ to sen/models/: no doc points at the old place."""
    for doc in LINKED_DOCS:
        stale = re.findall(r"(?<![\w/])models/sen_mp", doc.read_text())
        assert not stale, f"{doc.relative_to(ROOT)} still names models/sen_mp"
