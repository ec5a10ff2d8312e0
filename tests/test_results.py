"""Committed results (``ivedu.results``): atomic writes, stale settings, chapter run times."""

import json
from dataclasses import replace

import pytest

from ivedu.results import (CHAPTER_TIMES, RESULTS_DIR, format_seconds, load_result, result_path, run_times,
                           save_result, stale_settings)
from ivedu.settings import settings

COMMITTED = sorted(p for p in RESULTS_DIR.glob("*/*.json") if p.stem != CHAPTER_TIMES)


def test_save_and_load_round_trip(tmp_path):
    path = save_result({"summary": {"gain": 0.5}}, result_path("tiny", "extraction", tmp_path))
    assert path == tmp_path / "tiny" / "extraction.json"
    assert load_result("tiny", "extraction", tmp_path) == {"summary": {"gain": 0.5}}
    assert load_result("smol", "extraction", tmp_path) is None
    assert [p.name for p in path.parent.iterdir()] == ["extraction.json"]
    assert path.stat().st_mode & 0o044, "readable by others, like any file the user writes"


def test_a_failed_save_leaves_the_earlier_file_whole(tmp_path):
    path = save_result({"summary": 1}, result_path("tiny", "x", tmp_path))
    with pytest.raises(TypeError):
        save_result({"summary": object()}, path)
    assert json.loads(path.read_text()) == {"summary": 1}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"], "no temporary file is left behind"


def test_stale_settings_names_what_changed():
    now = settings("ch2", "tiny")
    result = {"settings": json.loads(json.dumps(now.as_dict()))}
    assert stale_settings(result, now.as_dict()) == []
    later = replace(now, extraction=replace(now.extraction, n_prompts=12))
    assert stale_settings(result, later.as_dict()) == ["extraction.n_prompts"]
    assert stale_settings({"settings": {}}, now.as_dict()), "a result without settings is stale"
    assert stale_settings(result, later.as_dict(), reads=("finetune", "data.sequence")) == [], \
        "a change the command does not read leaves its result up to date"
    assert stale_settings(result, later.as_dict(), reads=("extraction",)) == ["extraction.n_prompts"]
    del result["settings"]["guided"]["stop_examples"]
    assert stale_settings(result, now.as_dict()) == [], "a setting added since and left off changes nothing"
    on = replace(now, guided=replace(now.guided, stop_examples=48))
    assert stale_settings(result, on.as_dict()) == ["guided.stop_examples"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_results_match_what_the_code_runs_today(path):
    from ivedu.experiments import EXPERIMENTS, settings_read

    result = json.loads(path.read_text())
    profile, name = path.parent.name, path.stem
    assert name in EXPERIMENTS, f"{path}: no reproduction command is called {name!r}"
    assert result["profile"] == profile and {"settings", "versions", "seconds", "date", "summary"} <= set(result)
    now = settings(EXPERIMENTS[name][1], profile)
    current, reads = now.as_dict(), settings_read(name, now)
    assert not stale_settings(result, current, reads), (
        f"{path} was made with other settings ({stale_settings(result, current, reads)}); re-run "
        f"`python -m ivedu.experiments {name} --profile {profile} --seeds {result['seeds']} --save`")


def test_run_times_reads_each_profile(tmp_path):
    save_result({"profile": "smol", "chapters": {"ch1": {"seconds": 450.0, "machine": "2-core CPU"}}},
                result_path("smol", CHAPTER_TIMES, tmp_path))
    line = run_times("ch1", ("tiny", "smol"), root=tmp_path)
    assert line == "run time of this chapter: tiny not measured, smol 7.5 min (2-core CPU)"
    assert format_seconds(45) == "45 s" and format_seconds(119.4) == "119 s"


def test_chapter_times_table_has_a_row_per_chapter_and_a_column_per_profile(tmp_path):
    from ivedu.results import chapter_times_markdown

    assert chapter_times_markdown(("tiny",), root=tmp_path).endswith("No chapter time is recorded yet.")
    save_result({"profile": "smol", "chapters": {"ch1": {"seconds": 450.0, "machine": "2-core CPU"}}},
                result_path("smol", CHAPTER_TIMES, tmp_path))
    table = chapter_times_markdown(("tiny", "smol"), root=tmp_path)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| chapter | `tiny` | `smol` |" and len(rows) == 7
    assert "| 1. Diagnosing forgetting | not measured | 7.5 min |" in rows
    assert "| 2. Extracting instruction vectors | not measured | not measured |" in rows
    assert table.endswith("Measured `smol` on a 2-core CPU.")



def test_glue_result_returns_the_committed_numbers_and_names_a_missing_run(tmp_path):
    from ivedu.results import glue_result

    save_result({"summary": {"r2_iv": 0.25, "per_seed": [{"gain": 0.5}]}}, result_path("tiny", "dynamics", tmp_path))
    values = glue_result("tiny", "dynamics", {"r2": "summary.r2_iv", "first": "summary.per_seed.0.gain"}, "ch3",
                         root=tmp_path)
    assert values == {"r2": 0.25, "first": 0.5}
    with pytest.raises(FileNotFoundError, match="experiments guided --profile smol --seeds 3 --save"):
        glue_result("smol", "guided", {"gp": "summary.gp"}, "ch4", root=tmp_path)


def test_glue_result_outside_a_checkout_quotes_nothing(tmp_path):
    from ivedu.results import glue_result

    assert glue_result("tiny", "dynamics", {"r2": "summary.r2_iv"}, "ch3", root=tmp_path / "no-results") == {}


def test_markdown_table_shows_spread_only_over_several_seeds():
    from ivedu.results import markdown_table

    rows = {"`a`": {"gp": 0.5, "gp_std": 0.1, "steps": 250.4, "n_seeds": 3},
            "`b`": {"gp": 0.25, "gp_std": 0.0, "n_seeds": 1}, "before": {"gp": 0.9}}
    assert markdown_table(rows, ("gp", "steps")).splitlines() == [
        "| method | GP | steps |", "|---|---|---|", "| `a` | 0.50 ± 0.10 | 250 |", "| `b` | 0.25 |  |", "| before | 0.90 |  |"]
