"""The quick loop (``pytest -m "not real_model"``, ``make test-tiny``) leaves out every test that
loads the real chat model: each one is marked ``real_model``, by conftest.py's hook where it asks
for the ``smol`` fixture, by hand where it loads SmolLM2 another way."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

# Collects the suite only, and writes each collected test's fixtures and whether its own code
# calls a loader and names the profile "smol" (a load without the fixture).
PLUGIN = r'''
import inspect, json, os, re

LOADS = re.compile(r"\b(load_model|load_study|load_smol)\(")

def pytest_collection_finish(session):
    found = {}
    for item in session.items:
        try:
            source = inspect.getsource(item.function)
        except (AttributeError, OSError, TypeError):
            source = ""
        found[item.nodeid] = {"fixtures": list(getattr(item, "fixturenames", ())),
                              "loads_smol": bool(LOADS.search(source)) and '"smol"' in source}
    with open(os.environ["IVEDU_COLLECTED"], "w") as f:
        json.dump(found, f)
'''


def test_the_quick_loop_collects_no_test_of_the_real_model(tmp_path):
    (tmp_path / "collected_plugin.py").write_text(PLUGIN)
    out = tmp_path / "collected.json"
    env = {**os.environ, "IVEDU_COLLECTED": str(out),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "collected_plugin",
                          "-p", "no:randomly", "-p", "no:cacheprovider", "-m", "not real_model", str(TESTS)],
                         env=env, cwd=TESTS.parent, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    collected = json.loads(out.read_text())
    assert len(collected) > 100, "the quick loop should still run the tiny model's tests"
    uses_the_fixture = [name for name, test in collected.items() if "smol" in test["fixtures"]]
    loads_by_name = [name for name, test in collected.items() if test["loads_smol"]]
    assert uses_the_fixture == [], "conftest.py's hook should mark these real_model"
    assert loads_by_name == [], "these load SmolLM2 by name: mark them @pytest.mark.real_model"
    deselected = re.search(r"\((\d+) deselected\)", run.stdout)
    assert deselected and int(deselected.group(1)) >= 20, run.stdout[-500:]
