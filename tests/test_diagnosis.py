"""Chapter 1's reproduction command: the JSON it promises, on a cut-down setting."""

import json

from ivedu.experiments import experiment
from ivedu.experiments.diagnosis import SETTINGS, run

QUICK = {**SETTINGS, "general": ["continent", "capital"], "max_steps": 3, "stop_at": None, "k": 2,
         "sequence": ["first_french", "last_french"]}


def test_the_command_is_registered():
    assert experiment("diagnosis") is run


def test_summary_has_the_promised_fields_in_range():
    result = run([0], QUICK, progress=False)
    json.dumps(result)  # JSON-ready
    for method in ("full", "lora"):
        summary = result["summary"][method]
        for key in ("if_before", "if_after", "kn_before", "kn_after", "new_task"):
            assert 0.0 <= summary[key] <= 1.0, (method, key)
        assert summary["if_drop"] == summary["if_before"] - summary["if_after"]
    assert len(result["per_seed"]) == 2 and {r["method"] for r in result["per_seed"]} == {"full", "lora"}
    assert [row["task"] for row in result["general_before"]] == ["continent", "capital"]
    sequence = result["sequences"][0]
    assert len(sequence["R"]) == 2 and len(sequence["general_if"]) == 3
    assert set(result["summary"]["sequence"]["full"]) >= {"BWT_gem", "BWT_trace", "OP"}
    assert result["config"]["seeds"] == [0]
