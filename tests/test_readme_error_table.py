"""Every row of the README's table of bad inputs names tests that exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_row_of_the_error_table_points_to_existing_tests():
    readme = (ROOT / "README.md").read_text()
    refs = re.findall(r"`T/(test_\w+\.py)::(\w+)`", readme)
    assert len(refs) >= 10, "the README's error table lists too few tests"
    defined: dict[str, set[str]] = {}
    for file, name in refs:
        if file not in defined:
            tree = ast.parse((ROOT / "tests" / file).read_text())
            defined[file] = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in defined[file], f"README names tests/{file}::{name}, which does not exist"
