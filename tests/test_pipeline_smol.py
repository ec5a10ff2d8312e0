"""The whole method on the real chat model (the smol profile): SmolLM2-135M-Instruct, its chat
template, the shipped function-vector data.

Scan, instruction vector, steering, a few LoRA and IV-guided steps and the scores must run
end to end on a real tokenizer and chat template, with the profile's own sizes (nothing of
the tiny model's), and give numbers in range. The findings themselves are measured by the
reproduction commands, not asserted here.
"""

import dataclasses
import math

import pytest
import torch

from ivedu.evaluation import instruction_following_score, knowledge_score
from ivedu.extraction import clean_prompts, corrupted_prompts, scan_task
from ivedu.finetune import finetune
from ivedu.guided import GuidedObjective, GuidedSettings
from ivedu.intervention import Steering, instruction_vector, steered_first_token_accuracy
from ivedu.settings import settings as chapter_settings
from ivedu.study import ModelUnderStudy, load_tasks, prompt_format


@pytest.fixture(scope="module")
def setup(smol):
    settings = chapter_settings("ch2", "smol")
    model, tokenizer = smol
    fmt = prompt_format(settings, tokenizer)
    # every example, not only the ones the model knows: this test is about the pipeline running
    whole = dataclasses.replace(settings, data=dataclasses.replace(settings.data, known_only=False))
    world = load_tasks(whole, ModelUnderStudy(model, tokenizer, fmt, "smol"))
    return settings, model, tokenizer, world, fmt


def small(task, n: int = 8):
    return dataclasses.replace(task, train=task.train[:n], valid=task.valid[:n], test=task.test[:n])


def test_the_profile_names_the_real_model_and_its_own_sizes(setup):
    settings, model, _, world, fmt = setup
    assert settings.model == "smol" and model.config.num_hidden_layers == 30
    assert {t.name for t in world.general} == set(settings.data.general_tasks)
    assert max(settings.extraction.layers) < model.config.num_hidden_layers
    assert settings.guided.loss.layer < model.config.num_hidden_layers
    assert type(fmt).__name__ == "ChatFormat"


def test_scan_vector_steering_training_and_scores_on_the_real_model(setup):
    settings, model, tokenizer, world, fmt = setup
    task = small(world.task(settings.data.general_tasks[0]))
    new = small(world.task(settings.data.new_task))
    lm = ModelUnderStudy(model, tokenizer, fmt, "smol")
    scan = scan_task(lm, task, clean_prompts(task, "train", n=6, fmt=fmt),
                     corrupted_prompts(task, "train", n=6, fmt=fmt))
    assert scan.effects.shape == (30, 9) and torch.isfinite(scan.effects).all()
    assert scan.clean_prob > scan.corrupted_prob  # the instruction makes the answer likelier on a real model

    x = settings.extraction
    k, layer = x.head_counts[0], x.layers[len(x.layers) // 2]
    vector = instruction_vector(model, scan.mean_activations, scan.top_heads(k), task.name)
    assert vector.vector.shape == (576,) and torch.isfinite(vector.vector).all()
    bare = corrupted_prompts(task, "valid", "removed", n=None, fmt=fmt)
    accuracy = steered_first_token_accuracy(lm, bare.prompts, bare.answers, vector.vector,
                                            Steering(layer, x.scales[0], x.site))
    assert 0.0 <= accuracy <= 1.0

    two = dataclasses.replace(settings.finetune, max_steps=2, batch_size=4, warmup_steps=1, stop_at=None,
                              schedule="linear")
    adapted = finetune(lm, new, two, "lora", 0)
    assert adapted.steps == 2 and all(math.isfinite(x) for x in adapted.losses)
    guidance = GuidedSettings(kl_start=1.0, kl_all=0.1, head_mse=1.0, layer=layer, progressive_steps=2,
                              kl_gate=0.0, mse_gate=0.0)
    objective = GuidedObjective(model, vector.vector, vector.heads, guidance, steps=2)
    guided = finetune(lm, new, two, "lora", 0, objective)
    assert guided.steps == 2 and all(math.isfinite(v) for terms in objective.history for v in terms.values())

    before = instruction_following_score(lm, task, "test")
    knowledge = knowledge_score(lm, task, "test")
    assert 0.0 <= before.exact_match <= 1.0 and 0.0 <= knowledge.ranking_accuracy <= 1.0
