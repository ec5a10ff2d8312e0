"""Continual-learning baselines: replay, EWC and the harness that runs every method the same way."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from ivedu.continual import (KINDS, Criterion, EWCObjective, GeneralScores, Method, MethodScores, ReplayObjective,
                             ablation_methods, criterion, fisher_diagonal, format_summary, methods, replay_buffer,
                             run_method, summarise, weight_changes)
from ivedu.corpus import collate
from ivedu.finetune import lora_model, task_sequences
from ivedu.guided import new_task_vectors
from ivedu.prompts import TINY_FORMAT
from ivedu.settings import TERMS, FinetuneSettings, GuidedSettings, settings
from ivedu.study import ModelUnderStudy

# Two short stages per run: no stop rule, so every stage takes exactly ``max_steps`` steps.
SHORT = FinetuneSettings(stop_at=None)


def small(task, n=6):
    """``task`` with a short valid split, so that scoring it after every stage is quick."""
    return dataclasses.replace(task, valid=task.valid[:n])


@pytest.fixture(scope="module")
def tasks(world):
    return [small(world.task("first_french")), small(world.task("middle"))]


@pytest.fixture(scope="module")
def lm(tiny):
    model, tokenizer = tiny
    return ModelUnderStudy(model, tokenizer, TINY_FORMAT, "tiny")


@pytest.fixture(scope="module")
def vectors(lm, tasks):
    s = settings("ch4", "tiny")
    few = dataclasses.replace(s, guided=dataclasses.replace(s.guided, vector_prompts=8))
    return new_task_vectors(lm, tasks, few)[0]


def test_methods_are_checked():
    with pytest.raises(ValueError, match="unknown kind"):
        Method("x", "lwf")
    with pytest.raises(ValueError, match="base must be"):
        Method("x", "plain", base="adapter")


def test_the_replay_buffer_keeps_a_few_examples_of_each_finished_task(lm, tasks):
    buffer = replay_buffer(lm, tasks, per_task=5, seed=0)
    assert len(buffer) == 10
    assert buffer == replay_buffer(lm, tasks, per_task=5, seed=0)
    assert buffer != replay_buffer(lm, tasks, per_task=5, seed=1)
    first = set(map(tuple, (s.input_ids for s in task_sequences(lm, tasks[0]))))
    assert sum(tuple(s.input_ids) in first for s in buffer) == 5
    with pytest.raises(ValueError, match="empty"):
        ReplayObjective([], 0, 4, 1.0, 0)


def test_replay_adds_the_replayed_batch_loss(lm, tasks):
    model, tokenizer = lm.model, lm.tokenizer
    buffer = replay_buffer(lm, tasks[:1], per_task=4, seed=0)
    batch = collate(task_sequences(lm, tasks[1])[:4], tokenizer.pad_token_id)
    objective = ReplayObjective(buffer, tokenizer.pad_token_id, batch_size=4, weight=0.5, seed=0)
    with torch.no_grad():
        expected = model(**batch).loss + 0.5 * model(**collate(buffer, tokenizer.pad_token_id)).loss
        got = objective(model, batch, 0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_fisher_is_non_negative_has_every_weight_and_restores_the_flags(lm, tasks):
    model, tokenizer = lm.model, lm.tokenizer
    frozen = copy.deepcopy(model)
    for p in frozen.parameters():
        p.requires_grad_(False)
    fisher = fisher_diagonal(frozen, tokenizer, task_sequences(lm, tasks[0])[:3])
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
def test_every_method_runs_through_the_harness(lm, world, tasks, vectors, kind):
    """Two short stages per method: the R matrix, GP and the metrics come out in range."""
    method = Method(kind, kind, guided=GuidedSettings(kl_gate=0.0), replay_per_task=4, replay_batch=4,
                    fisher_examples=3)
    before = {n: p.clone() for n, p in lm.model.named_parameters()}
    run = run_method(lm, tasks, [small(world.task("first"))], method, 0, SHORT, max_steps=2, vectors=vectors,
                     split="valid", k=0)
    assert run.R.shape == (2, 2) and 0 <= run.gp <= 1 and np.isnan(run.ip)
    assert run.steps == (2, 2) and set(run.metrics) >= {"AP", "FP", "BWT_gem", "forgetting"}
    assert len(run.history) == 2 and run.tasks == tuple(t.name for t in tasks)
    assert run.scores.steps == 4 and run.scores.ap == run.metrics["AP"] and run.scores.gp == run.gp
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


def test_the_learning_rate_comes_from_the_fine_tuning_settings(lm, world, tasks, monkeypatch):
    """No rate is hard-coded in the harness: each base takes its rate from the profile's settings."""
    import ivedu.continual as continual

    seen = []
    real = continual.finetune_sequence

    def spy(lm, tasks, settings, method, *args, **kwargs):
        seen.append((method, settings.lr(method), settings.batch_size, settings.max_steps))
        return real(lm, tasks, settings, method, *args, **kwargs)

    monkeypatch.setattr(continual, "finetune_sequence", spy)
    training = FinetuneSettings(stop_at=None, lr_lora=5e-4, lr_full=2e-5, batch_size=4, max_steps=1)
    for base in ("lora", "full"):
        run_method(lm, tasks[:1], [small(world.task("first"))], Method("p", "plain", base), 0, training, k=0,
                   split="valid")
    assert seen == [("lora", 5e-4, 4, 1), ("full", 2e-5, 4, 1)]


def test_guided_methods_need_the_vectors(lm, world, tasks):
    with pytest.raises(ValueError, match="needs the instruction vector"):
        run_method(lm, tasks, [small(world.task("first"))], Method("g", "guided"), 0, SHORT, max_steps=1, k=0)


def test_guided_training_with_full_fine_tuning(lm, world, tasks, vectors):
    """The guided loss on a full fine-tune: the teacher is the frozen previous model, not an adapter."""
    method = Method("iv_guided_full", "guided", base="full", guided=GuidedSettings(kl_gate=0.0))
    run = run_method(lm, tasks, [small(world.task("first"))], method, 0, SHORT, max_steps=2, vectors=vectors,
                     split="valid", k=0)
    assert run.steps == (2, 2) and len(run.history) == 2
    assert run.history[1][0]["kl_all"] == pytest.approx(0.0, abs=1e-6)  # a full copy starts equal to its teacher at every stage


def test_the_prompt_format_reaches_replay_and_general_scores(lm, world, tasks, monkeypatch):
    import ivedu.evaluation as evaluation
    from ivedu.continual import general_scores
    from ivedu.prompts import PromptFormat

    marked = dataclasses.replace(lm, fmt=PromptFormat(input_prefix="question :", output_prefix="answer :"))
    assert replay_buffer(marked, tasks, per_task=3, seed=0) != replay_buffer(lm, tasks, 3, 0)
    seen = []

    def capture(lm, name, prompts, golds):
        seen.extend(prompts)
        return evaluation.InstructionScore(name, len(prompts), 0.0, 0.0, 0.0)

    monkeypatch.setattr(evaluation, "_generation_score", capture)
    general_scores(marked, [small(world.task("first"))], "valid", k=2)
    assert seen and all(p.startswith("question :") and p.endswith("answer :") for p in seen)


def test_the_registry_has_every_method_and_one_ablation_per_term():
    loss = GuidedSettings(kl_start=1.0)
    registry = methods(loss)
    assert {"plain_lora", "plain_full", "kl", "replay", "ewc", "iv_guided", "random_vector"} <= set(registry)
    assert all(name == m.name for name, m in registry.items())
    assert registry["iv_guided"].guided == registry["random_vector"].guided == registry["kl"].guided == loss
    assert registry["plain_full"].base == "full" and registry["iv_guided"].kind == "guided"
    ablation = ablation_methods(loss)
    assert set(ablation) == {f"iv_guided - {t}" for t in TERMS}
    assert ablation["iv_guided - kl_all"].guided == loss.without("kl_all")


def test_general_scores_average_into_gp_and_ip():
    scores = GeneralScores({"a": 1.0, "b": 0.5}, {"a": 0.25, "b": 0.25})
    assert scores.gp == 0.75 and scores.ip == 0.25
    assert np.isnan(GeneralScores({"a": 1.0}, {}).ip)


def test_the_summary_and_the_criterion():
    runs = [MethodScores(gp=0.5, ip=0.2, ap=0.9, fp=0.6, forgetting=0.3, bwt=-0.4, steps=200),
            MethodScores(gp=0.7, ip=0.4, ap=0.9, fp=0.4, forgetting=0.5, bwt=-0.6, steps=300)]
    s = summarise(runs)
    assert s.mean.gp == pytest.approx(0.6) and s.std.gp == pytest.approx(0.1414, abs=1e-3) and s.n_seeds == 2
    assert summarise(runs[:1]).std.gp == 0.0
    with pytest.raises(ValueError, match="no runs"):
        summarise([])

    def with_mean(**changes):
        return dataclasses.replace(s, mean=dataclasses.replace(s.mean, **changes))

    plain = with_mean(gp=0.4, ap=0.92)
    met = criterion({"iv_guided": s, "plain_lora": plain, "random_vector": with_mean(gp=0.5)})
    assert isinstance(met, Criterion) and met.met
    assert met.gp_gain_over_plain_lora == pytest.approx(0.2) and met.ap_change_vs_plain_lora == pytest.approx(-0.02)
    assert not criterion({"iv_guided": s, "plain_lora": plain, "random_vector": with_mean(gp=0.65)}).met
    assert not criterion({"iv_guided": s, "plain_lora": with_mean(gp=0.4, ap=0.99), "random_vector": plain}).met
    assert criterion({"iv_guided": s}) is None
    table = format_summary({"iv_guided": s}, before=GeneralScores({"a": 0.97}, {"a": 0.58}))
    assert "iv_guided" in table and "0.60 ± 0.14" in table and "0.97" in table and "0.58" in table


def test_the_headline_pairs_iv_guided_with_its_strongest_control_per_seed_and_task():
    from ivedu.continual import headline

    def row(method, seed, a, b):
        return {"method": method, "seed": seed, "general_if": {"a": a, "b": b}}

    rows = [row("iv_guided", 0, 0.5, 0.5), row("iv_guided", 1, 0.6, 0.4),
            row("random_vector", 0, 0.7, 0.5), row("random_vector", 1, 0.6, 0.6),
            row("kl", 0, 0.1, 0.1), row("kl", 1, 0.2, 0.2), row("plain_lora", 0, 0.0, 0.0)]
    top = headline(rows)
    assert top.control == "random_vector" and top.n_pairs == 4
    assert top.gp_gain == pytest.approx((-0.2 + 0.0 + 0.0 - 0.2) / 4)
    assert top.interval[0] <= top.gp_gain <= top.interval[1] and top.interval[1] <= 0.0
    assert headline([r for r in rows if r["method"] != "iv_guided"]) is None
