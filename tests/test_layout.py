"""The shape of the package: inference never loads the training machinery."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(done.stdout.split())


def test_prediction_imports_no_training_module():
    for statement in ("import sen", "import sen.predict", "from sen.cli import main"):
        loaded = _modules_after(statement)
        assert "sen.predict" in loaded or statement == "from sen.cli import main"
        training = sorted(m for m in loaded if m.startswith("sen.training"))
        assert not training, f"{statement} loaded {training}"
        assert "tomllib" not in loaded


def test_cli_predict_parser_imports_no_training_module():
    code = "import sys; from sen.cli import _parser; _parser(train_options=False); print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "sen.training" not in done.stdout
    code = "import sys; from sen.cli import _parser; _parser(); print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "sen.training.config" in done.stdout  # this check can fail: the train options do load it


def test_no_function_in_the_library_or_the_app_is_longer_than_80_lines():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    long = []
    for path in sorted([*(root / "sen").rglob("*.py"), *(root / "app").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long
