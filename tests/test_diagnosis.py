"""Chapter 1's diagnosis (ivedu.diagnosis) and its reproduction command, on a cut-down setting."""

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest

from ivedu.diagnosis import DiagnosisRun, MethodSummary, diagnose, format_summary, recorded_runs, run_sequence
from ivedu.experiments import experiment
from ivedu.experiments.diagnosis import run
from ivedu.settings import DataSettings, FinetuneSettings, settings
from ivedu.study import load_study, load_tasks

QUICK = settings("ch1", "tiny", data=DataSettings(world="tiny", general_tasks=("continent", "capital"),
                                                  new_task="first_french", sequence=("first_french", "last_french"),
                                                  k_shots=2),
                 finetune=replace(FinetuneSettings(), max_steps=3, stop_at=None))


@pytest.fixture(scope="module")
def lm():
    return load_study(QUICK)


def test_the_command_is_registered():
    assert experiment("diagnosis") is run


def test_a_diagnosis_trains_the_new_task_and_scores_every_general_task(lm):
    world = load_tasks(QUICK, lm)
    general = [world.task("continent"), world.task("capital")]
    result = diagnose(lm, world.task("first_french"), general, "lora", 0, QUICK)
    assert result.steps == 3 and len(result.losses) == 3 and result.method == "lora"
    assert [row.task for row in result.general_after] == ["continent", "capital"]
    sequence = run_sequence(lm, [world.task("first_french"), world.task("last_french")], general, "full", 0, QUICK)
    assert len(sequence.R) == 2 and len(sequence.general_if) == 3 and sequence.steps == (3, 3)


def test_a_chapter_reads_the_runs_it_does_not_train_from_the_commands_result():
    smol = settings("ch1", "smol")
    committed = json.loads((Path(__file__).parents[1] / "results/smol/diagnosis.json").read_text())
    row = next(r for r in committed["per_seed"] if (r["method"], r["seed"]) == ("lora", 0))
    [run_] = recorded_runs(smol, "lora", [0])
    assert isinstance(run_, DiagnosisRun)
    assert dataclasses.asdict(run_) == {**row, "losses": tuple(row["losses"]), "general_after": tuple(row["general_after"])}
    with pytest.raises(ValueError, match="no lora run for seeds \\[7\\].*--profile smol"):
        recorded_runs(smol, "lora", [7])
    with pytest.raises(ValueError, match="other settings \\(finetune.max_steps\\)"):
        recorded_runs(replace(smol, finetune=replace(smol.finetune, max_steps=7)), "lora", [0])
    with pytest.raises(FileNotFoundError, match="ivedu.experiments diagnosis --profile colab"):
        recorded_runs(settings("ch1", "colab"), "lora", [0])


def test_summary_has_the_promised_fields_in_range():
    result = run(QUICK, [0], progress=False)
    json.dumps(result)  # JSON-ready
    for method in ("full", "lora"):
        summary = result["summary"][method]
        for key in ("if_before", "if_after", "kn_before", "kn_after", "new_task", "new_task_before"):
            assert 0.0 <= summary[key] <= 1.0, (method, key)
        assert summary["if_drop"] == summary["if_before"] - summary["if_after"]
    assert len(result["per_seed"]) == 2 and {r["method"] for r in result["per_seed"]} == {"full", "lora"}
    assert [row["task"] for row in result["general_before"]] == ["continent", "capital"]
    sequence = result["sequences"][0]
    assert len(sequence["R"]) == 2 and len(sequence["general_if"]) == 3
    assert set(result["summary"]["sequence"]["full"]) >= {"BWT_gem", "BWT_trace", "OP"}
    claim = result["summary"]["claim"]["full"]
    assert claim["if_drop"] == pytest.approx(result["summary"]["full"]["if_drop"])
    low, high = claim["if_drop_interval"]
    assert low <= claim["if_drop"] <= high
    before = {row["task"]: row for row in result["general_before"]}
    assert list(claim["knowledge_tasks"]) == [t for t in ("continent", "capital") if before[t]["kn_ranking"] >= 0.6]
    for row in claim["tasks"]:
        assert 0.0 <= row["constant"] <= 1.0 and 0.0 <= row["starts_right_after"] <= 1.0
        assert row["if_before"] == before[row["task"]]["if_exact_match"] and not row["taught"]


def test_the_summary_table_shows_each_method():
    row = dict(if_before=1.0, if_after=0.5, icl_before=1.0, icl_after=1.0, kn_before=0.8, kn_after=0.8,
               if_prob_before=0.9, if_prob_after=0.4, kn_prob_before=0.5, kn_prob_after=0.5, new_task=1.0,
               new_task_before=0.0, steps=50.0, if_drop=0.5, kn_drop=0.0,
               sd_over_seeds={"if_after": 0.1, "kn_after": 0.0, "new_task": 0.0})
    table = format_summary({"full": MethodSummary(**row), "lora": MethodSummary(**row)})
    assert "full: before -> after" in table and "1.00 -> 0.50 (0.10)" in table


def test_the_claim_table_shows_each_tasks_controls_and_which_knowledge_is_judged():
    from ivedu.diagnosis import ClaimOne, TaskDiagnosis, format_claim_one

    rows = (TaskDiagnosis("sentiment", False, 0.55, 1.0, 0.5, 1.0, 0.6, 1.0, 0.5, 0.1, 0.9, 0.85, True),
            TaskDiagnosis("antonym", True, 0.01, 1.0, 0.2, 1.0, 0.3, None, None, 0.1, 0.3, 0.3, False))
    table = format_claim_one(ClaimOne(0.65, (0.5, 0.8), 0.05, (0.0, 0.1), ("sentiment",), 0.5, 0.8, rows))
    lines = table.splitlines()
    assert lines[1].startswith("sentiment") and "native" in lines[1] and lines[1].endswith("*")
    assert "taught" in lines[2] and not lines[2].endswith("*") and "-   ->   -" in lines[2]
    assert "drop 0.65 [0.50, 0.80]" in lines[-1] and "knowledge drop 0.05 [0.00, 0.10]" in lines[-1]
    empty = ClaimOne(0.65, (0.5, 0.8), float("nan"), None, (), 0.5, 0.8, rows)
    assert "no task's knowledge can be judged" in format_claim_one(empty)
