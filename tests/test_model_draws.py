"""The model-draws study: one tiny model per seed, measured with chapters 1 and 2's code."""

import pytest

from dataclasses import replace

from ivedu.experiments import experiment, model_draws
from ivedu.settings import ExtractionSettings, FinetuneSettings, settings
from ivedu.toy import TinyConfig

SMALL = TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, steps=6,
                   pretrain_steps=3, batch_size=8, warmup_steps=2)
TINY = settings("ch1", "tiny")
SHORT = settings("ch1", "tiny", data=replace(TINY.data, general_tasks=("sentiment",), k_shots=1),
                 finetune=replace(FinetuneSettings(), max_steps=2, stop_at=None),
                 extraction=ExtractionSettings(n_prompts=4, head_counts=(1,), scales=(1.0,), n_random=1))


def test_each_seed_trains_its_own_model_and_every_criterion_is_measured():
    result = model_draws.run(SHORT, [0, 1], config=SMALL)
    first, second = result["per_seed"]
    assert (first["seed"], second["seed"]) == (0, 1)
    assert first["heldout_em"] != second["heldout_em"] or first["extraction"] != second["extraction"]
    assert result["summary"]["iv_gain"]["min"] == min(first["iv_gain"], second["iv_gain"])
    row = first
    assert set(row["heldout_em"]) == {"capital", "continent", "antonym", "sentiment", "french", "plural",
                                      "bracket", "first", "last", "reverse"}
    assert row["lowest_heldout_em"] == min(row["heldout_em"].values())
    for name in model_draws.MEASURES:
        assert -1 <= row[name] <= 1, name
    assert row["iv_gain"] == pytest.approx(row["extraction"]["with_iv"] - row["extraction"]["corrupted"])
    assert row["other_minus_own"] == pytest.approx(row["extraction"]["with_other_task"] - row["extraction"]["with_iv"])


def test_the_summary_spans_the_draws_and_the_command_is_registered():
    rows = [{name: 0.2 for name in model_draws.MEASURES}, {name: 0.6 for name in model_draws.MEASURES}]
    summary = model_draws.summarise(rows)
    assert summary["iv_gain"] == {"mean": pytest.approx(0.4), "min": 0.2, "max": 0.6}
    assert set(summary) == set(model_draws.MEASURES)
    assert experiment("model_draws") is model_draws.run
