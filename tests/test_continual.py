"""Continual-learning baselines: replay, EWC and the harness that runs every method the same way."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from ivedu.continual import (KINDS, EWCObjective, Method, ReplayObjective, fisher_diagonal, replay_buffer,
                             run_method, weight_changes)
from ivedu.corpus import collate
from ivedu.finetune import lora_model, task_sequences
from ivedu.guided import GuidedSettings, new_task_vector


def small(task, n=6):
    """``task`` with a short valid split, so that scoring it after every stage is quick."""
    return dataclasses.replace(task, valid=task.valid[:n])


@pytest.fixture(scope="module")
def tasks(world):
    return [small(world.task("first_french")), small(world.task("middle"))]


@pytest.fixture(scope="module")
def vectors(tiny, tasks):
    model, tokenizer = tiny
    return {t.name: new_task_vector(model, tokenizer, t, k=2, n_prompts=8)[0] for t in tasks}


def test_methods_are_checked():
    with pytest.raises(ValueError, match="unknown kind"):
        Method("x", "lwf")
    with pytest.raises(ValueError, match="base must be"):
        Method("x", "plain", base="adapter")


def test_the_replay_buffer_keeps_a_few_examples_of_each_finished_task(tiny, tasks):
    _, tokenizer = tiny
    buffer = replay_buffer(tokenizer, tasks, per_task=5, seed=0)
    assert len(buffer) == 10
    assert buffer == replay_buffer(tokenizer, tasks, per_task=5, seed=0)
    assert buffer != replay_buffer(tokenizer, tasks, per_task=5, seed=1)
    first = set(map(tuple, (s.input_ids for s in task_sequences(tokenizer, tasks[0]))))
    assert sum(tuple(s.input_ids) in first for s in buffer) == 5
    with pytest.raises(ValueError, match="empty"):
        ReplayObjective([], 0, 4, 1.0, 0)


def test_replay_adds_the_replayed_batch_loss(tiny, tasks):
    model, tokenizer = tiny
    buffer = replay_buffer(tokenizer, tasks[:1], per_task=4, seed=0)
    batch = collate(task_sequences(tokenizer, tasks[1])[:4], tokenizer.pad_token_id)
    objective = ReplayObjective(buffer, tokenizer.pad_token_id, batch_size=4, weight=0.5, seed=0)
    with torch.no_grad():
        expected = model(**batch).loss + 0.5 * model(**collate(buffer, tokenizer.pad_token_id)).loss
        got = objective(model, batch, 0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_fisher_is_non_negative_has_every_weight_and_restores_the_flags(tiny, tasks):
    model, tokenizer = tiny
    frozen = copy.deepcopy(model)
    for p in frozen.parameters():
        p.requires_grad_(False)
    fisher = fisher_diagonal(frozen, tokenizer, task_sequences(tokenizer, tasks[0])[:3])
    params = dict(frozen.named_parameters())
    assert set(fisher) == set(params)
    assert all(f.shape == params[n].shape and (f >= 0).all() for n, f in fisher.items())
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.grad is None for p in frozen.parameters())
    with pytest.raises(ValueError, match="no sequences"):
        fisher_diagonal(frozen, tokenizer, [])


def test_lora_weight_changes_are_the_merged_minus_the_anchor(tiny):
    model, _ = tiny
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    student = lora_model(copy.deepcopy(model))
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    changes = weight_changes(student, anchor)
    merged = dict(copy.deepcopy(student).merge_and_unload().named_parameters())
    assert changes
    for name, change in changes.items():
        torch.testing.assert_close(change, merged[name] - anchor[name], atol=1e-6, rtol=1e-5)


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_the_change(tiny):
    model, _ = tiny
    full = copy.deepcopy(model)
    anchor = {n: p.detach().clone() for n, p in full.named_parameters()}
    fisher = {n: torch.ones_like(p) for n, p in anchor.items()}
    objective = EWCObjective(anchor, fisher, lam=2.0)
    assert objective.penalty(full).item() == 0.0
    name, weight = next(iter(full.named_parameters()))
    with torch.no_grad():
        weight.view(-1)[0] += 0.5
    assert objective.penalty(full).item() == pytest.approx(0.25)


@pytest.mark.parametrize("kind", KINDS)
def test_every_method_runs_through_the_harness(tiny, world, tasks, vectors, kind):
    """Two short stages per method: the R matrix, GP and the metrics come out in range."""
    model, tokenizer = tiny
    method = Method(kind, kind, guided=GuidedSettings(kl_gate=0.0), replay_per_task=4, replay_batch=4,
                    fisher_examples=3)
    before = {n: p.clone() for n, p in model.named_parameters()}
    run = run_method(model, tokenizer, tasks, [small(world.task("first"))], method, seed=0, steps=2, vectors=vectors,
                     split="valid", k=0)
    assert run.R.shape == (2, 2) and 0 <= run.gp <= 1 and np.isnan(run.ip)
    assert run.steps == [2, 2] and set(run.metrics) >= {"AP", "FP", "BWT_gem", "forgetting"}
    assert len(run.history) == 2
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_guided_methods_need_the_vectors(tiny, world, tasks):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="needs the instruction vector"):
        run_method(model, tokenizer, tasks, [], Method("g", "guided"), seed=0, steps=1, k=0)


def test_guided_training_with_full_fine_tuning(tiny, world, tasks, vectors):
    """The guided loss on a full fine-tune: the teacher is the frozen previous model, not an adapter."""
    model, tokenizer = tiny
    method = Method("iv_guided_full", "guided", base="full", guided=GuidedSettings(kl_gate=0.0))
    run = run_method(model, tokenizer, tasks, [small(world.task("first"))], method, seed=0, steps=2, vectors=vectors,
                     split="valid", k=0)
    assert run.steps == [2, 2] and len(run.history) == 2
    assert run.history[1][0]["kl_all"] == pytest.approx(0.0, abs=1e-6)  # a full copy starts equal to its teacher at every stage


def test_the_prompt_format_reaches_replay_and_general_scores(tiny, world, tasks, monkeypatch):
    import ivedu.evaluation as evaluation
    from ivedu.continual import general_scores
    from ivedu.prompts import PromptFormat

    _, tokenizer = tiny
    marked = PromptFormat(input_prefix="question :", output_prefix="answer :")
    assert replay_buffer(tokenizer, tasks, per_task=3, seed=0, fmt=marked) != replay_buffer(tokenizer, tasks, 3, 0)
    seen = []

    def capture(model, tokenizer, name, prompts, golds):
        seen.extend(prompts)
        return evaluation.InstructionScore(name, len(prompts), 0.0, 0.0, 0.0)

    monkeypatch.setattr(evaluation, "_generation_score", capture)
    general_scores(tiny[0], tokenizer, [small(world.task("first"))], "valid", k=2, fmt=marked)
    assert seen and all(p.startswith("question :") and p.endswith("answer :") for p in seen)
