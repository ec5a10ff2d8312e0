"""The package's shape: imports run one way, commands stay thin, nothing defaults to the tiny format."""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ivedu"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
COMMANDS = sorted((PACKAGE / "experiments").glob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_only_the_command_line_imports_the_commands():
    for path in MODULES:
        if path.parent.name != "experiments":
            assert not {m for m in imported(path) if m.startswith("ivedu.experiments")}, path.name


def test_no_chapter_imports_the_commands():
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                         if c["cell_type"] == "code")
        assert "ivedu.experiments" not in code, path.name


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.name)
def test_every_command_is_a_short_script(path):
    assert len(path.read_text().splitlines()) <= 100


def test_no_settings_dict_is_left():
    for path in MODULES:
        assert not re.search(r"^SETTINGS\s*(:|=)", path.read_text(), re.M), path.name


def test_no_function_outside_prompts_defaults_to_the_tiny_format():
    for path in MODULES:
        if path.name == "prompts.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
                assert not [d for d in defaults if isinstance(d, ast.Name) and d.id == "TINY_FORMAT"], \
                    f"{path.name}: {node.name}"


def test_the_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    for path in MODULES:
        if path.parent == PACKAGE and path.name != "__init__.py":
            assert f"`{path.name}`" in layout, path.name


def test_every_exercise_module_has_its_own_test_file():
    for path in sorted((PACKAGE / "exercises").glob("ch*.py")):
        assert (ROOT / "tests" / f"test_exercises_{path.stem}.py").exists(), path.name
