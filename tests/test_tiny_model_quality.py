"""The shipped tiny model keeps the quality the chapters rely on, on held-out inputs.

The project's targets: exact match at least 0.95 on every general task, and knowledge ranking
at least 0.95. Chapter 1 needs instruction following this high before fine-tuning for a drop
to show, and knowledge intact. See the README's "tiny model" section for the measured scores.
"""

import pytest

import ivedu
from ivedu.evaluation import score_tasks
from ivedu.models import tiny_recipe


@pytest.fixture(scope="module")
def heldout_scores():
    model, tokenizer = ivedu.load_model("tiny")
    world = ivedu.build_world(tiny_recipe()["config"]["world_seed"])
    return {row.task: row for row in score_tasks(model, tokenizer, world.general, split="heldout")}


def test_follows_instructions_on_every_task_on_heldout_inputs(heldout_scores):
    low = {t: round(r.exact_match, 3) for t, r in heldout_scores.items() if r.exact_match < 0.95}
    assert not low, f"exact match below 0.95 on held-out inputs: {low}"


def test_every_general_task_is_scored(heldout_scores):
    world = ivedu.build_world(tiny_recipe()["config"]["world_seed"])
    assert set(heldout_scores) == {task.name for task in world.general}


def test_knows_the_heldout_facts_in_statement_form(heldout_scores):
    low = {t: round(r.ranking_accuracy, 3) for t, r in heldout_scores.items() if r.ranking_accuracy < 0.95}
    assert not low, f"knowledge ranking accuracy below 0.95 on held-out inputs: {low}"
