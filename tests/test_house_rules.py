"""The rules of the house that a machine can check: which floor may import which, and what the first popup waits for."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(folder: str) -> dict[Path, set[str]]:
    found: dict[Path, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[path] = names
    return found


def test_trainer_never_imports_the_ui():
    for path, names in imported_modules("sd_scripts").items():
        assert not names & {"tkinter", "wizard", "questions"}, f"{path} imports the UI side"


def test_wizard_never_imports_the_questions():
    for path, names in imported_modules("wizard").items():
        assert "questions" not in names, f"{path} imports questions/ (flows must be handed to it)"


def test_questions_are_declarations_without_toolkit_or_torch():
    for path, names in imported_modules("questions").items():
        assert not names & {"tkinter", "torch", "diffusers", "transformers"}, f"{path} imports a toolkit or torch"


def test_the_path_to_the_first_popup_imports_no_heavy_library():
    code = (
        "import sys, runpy; sys.argv = ['popup_main.py', '--help'];\n"
        "import popup_main, wizard.app, questions, wizard.config, wizard.askers.tk_asker\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"heavy modules imported before the first popup: {result.stdout}"
