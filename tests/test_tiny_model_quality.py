"""The shipped tiny model keeps the quality the chapters rely on, on held-out inputs.

Floors, not targets: chapter 1 needs instruction following high enough before fine-tuning
for a drop to show, and knowledge intact. The project's target (exact match >= 0.95 on every
task) is met on seven of ten tasks; capital, continent and antonym reach 0.93-0.94 (one miss
in about twenty held-out inputs); see the README's "tiny model" section.
"""

import pytest

import ivedu
from ivedu.evaluation import score_tasks
from ivedu.models import tiny_recipe
from ivedu.prompts import TINY_FORMAT
from ivedu.study import ModelUnderStudy

FMT = TINY_FORMAT  # the tiny model's prompt format


@pytest.fixture(scope="module")
def heldout_scores():
    model, tokenizer = ivedu.load_model("tiny")
    world = ivedu.build_world(tiny_recipe()["config"]["world_seed"])
    return {row.task: row for row in score_tasks(ModelUnderStudy(model, tokenizer, FMT), world.general, "heldout")}


def test_follows_instructions_on_heldout_inputs(heldout_scores):
    mean = sum(r.exact_match for r in heldout_scores.values()) / len(heldout_scores)
    assert mean >= 0.95, f"mean exact match {mean:.3f} on held-out inputs"
    low = {t: round(r.exact_match, 3) for t, r in heldout_scores.items() if r.exact_match < 0.9}
    assert not low, f"exact match below 0.9 on held-out inputs: {low}"


def test_list_and_format_tasks_generalise_to_heldout_lists(heldout_scores):
    world = ivedu.build_world(tiny_recipe()["config"]["world_seed"])
    for task in world.general:
        if task.kind in ("list", "format"):
            assert heldout_scores[task.name].exact_match >= 0.95, task.name


def test_knows_the_heldout_facts_in_statement_form(heldout_scores):
    low = {t: round(r.ranking_accuracy, 3) for t, r in heldout_scores.items() if r.ranking_accuracy < 0.95}
    assert not low, f"knowledge ranking accuracy below 0.95 on held-out inputs: {low}"
