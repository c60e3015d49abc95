"""The README's set-up commands are the ones CI runs, and the documented entry points exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README must open with a bash block of set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_app_and_test_commands():
    app, tests = _readme_commands()[:2]
    assert "streamlit run app/serve.py --server.port 8501" in app
    assert "pip install -r requirements.txt" in app and "npm ci" in app
    assert "python -m pytest" in tests and "requirements-test.txt" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()


def test_app_entry_point_and_requirements_exist():
    assert (ROOT / "app" / "Home.py").is_file()
    reqs = (ROOT / "requirements.txt").read_text()
    assert "torch==2.13.0" in reqs
    for pkg in ("pymatgen", "spglib", "streamlit", "plotly", "scipy"):
        assert pkg in reqs
