"""The package's shape: imports run one way, with no cycle, commands stay thin, nothing defaults to the tiny format."""

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
        # A chapter may print a command for the reader to run; it may not import one.
        assert not re.search(r"^\s*(from|import)\s+ivedu\.experiments", code, re.M), path.name


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.name)
def test_every_command_is_a_short_script(path):
    assert len(path.read_text().splitlines()) <= 100


def test_no_settings_dict_is_left():
    for path in MODULES:
        assert not re.search(r"^SETTINGS\s*(:|=)", path.read_text(), re.M), path.name


def test_no_function_defaults_to_the_tiny_format():
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
                assert not [d for d in defaults if isinstance(d, ast.Name) and d.id == "TINY_FORMAT"], \
                    f"{path.name}: {node.name}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, names: set[str]) -> set[str]:
    """The modules of the package (``names``) that ``path`` imports, at the top or inside a function;
    ``from ivedu import x`` counts as importing ``ivedu.x`` where that is a module."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & names
            out |= subs or {node.module}
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return (out & names) - {module_name(path)}


def test_no_module_imports_itself_through_others():
    """No import cycle, not even one hidden by an import inside a function (which Python only
    meets when the function runs): modules import from below them."""
    names = {module_name(path) for path in MODULES}
    graph = {module_name(path): package_imports(path, names) for path in MODULES}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            module, route = stack.pop()
            for imported_module in sorted(graph[module]):
                if imported_module == start:
                    return route + [start]
                if imported_module not in seen:
                    seen.add(imported_module)
                    stack.append((imported_module, route + [imported_module]))
        return None

    cycles = [cycle for cycle in map(cycle_from, sorted(graph)) if cycle]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_format_parameter_has_a_default():
    """A prompt format is the model's (``lm.fmt``) or passed on purpose, never a silent default."""
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                positional = args.posonlyargs + args.args
                defaulted = positional[len(positional) - len(args.defaults):] + [
                    a for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
                assert "fmt" not in {a.arg for a in defaulted}, f"{path.name}: {node.name}"


def test_the_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    for path in MODULES:
        if path.parent == PACKAGE and path.name != "__init__.py":
            assert f"`{path.name}`" in layout, path.name


def test_every_exercise_module_has_its_own_test_file():
    for path in sorted((PACKAGE / "exercises").glob("ch*.py")):
        assert (ROOT / "tests" / f"test_exercises_{path.stem}.py").exists(), path.name
