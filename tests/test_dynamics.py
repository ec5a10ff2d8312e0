"""Chapter 3's measurements: similarities, R², restoration steering, hidden states, overlay."""

import copy

import pytest
import torch

from ivedu.dynamics import (choose_steering, cosine, effects_correlation, extract_vectors, hidden_state_similarity,
                            instructed_set, jaccard, parameter_distance, projections, r_squared, residual_states,
                            watch_training)
from ivedu.experiments import dynamics as experiment
from ivedu.finetune import finetune, lora_model
from ivedu.intervention import steered_first_token_accuracy


def test_cosine_and_jaccard():
    a = torch.tensor([1.0, 0.0, 0.0])
    assert cosine(a, 3 * a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, torch.tensor([0.0, 2.0, 0.0])) == pytest.approx(0.0)
    assert cosine(a, torch.zeros(3)) == 0.0
    assert jaccard([(0, 1), (1, 2)], [(1, 2), (0, 1)]) == 1.0
    assert jaccard([(0, 1), (1, 2)], [(1, 2), (3, 3)]) == pytest.approx(1 / 3)
    assert jaccard([(0, 1)], [(2, 2)]) == 0.0


def test_r_squared():
    assert r_squared([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(1.0)
    assert r_squared([0, 1, 2, 3], [7, 5, 3, 1]) == pytest.approx(1.0)  # a falling line explains it all too
    assert r_squared([0, 1, 2, 3], [1, 0, 0, 1]) == pytest.approx(0.0)
    assert r_squared([1, 1, 1], [0, 1, 2]) == 0.0  # nothing varies in x: nothing explained
    with pytest.raises(ValueError, match="at least 3"):
        r_squared([0, 1], [0, 1])


def test_effects_correlation():
    effects = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    assert effects_correlation(effects, 2 * effects + 1) == pytest.approx(1.0)
    assert effects_correlation(effects, -effects) == pytest.approx(-1.0)


def test_parameter_distance(tiny):
    model, _ = tiny
    assert parameter_distance(model, model) == 0.0
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.model.layers[0].mlp.up_proj.weight[0, :4] += torch.tensor([3.0, 0.0, 0.0, 4.0])
    assert parameter_distance(model, moved) == pytest.approx(5.0, rel=1e-5)
    with pytest.raises(ValueError, match="merge_and_unload"):
        parameter_distance(model, lora_model(copy.deepcopy(model)))


def test_residual_states_are_the_decoder_layers_outputs(tiny, world):
    model, tokenizer = tiny
    prompts = list(instructed_set(world.task("capital"), "valid").prompts[:5])
    states = residual_states(model, tokenizer, prompts, batch_size=2)
    assert states.shape == (4, 5, 128)
    # Against transformers' own hidden states: entry i + 1 is layer i's output (the last one is
    # normed there, so compare the inner layers). One prompt at a time: no padding.
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**ids, output_hidden_states=True).hidden_states
        for layer in range(3):
            assert torch.allclose(states[layer, i], hidden[layer + 1][0, -1], atol=1e-4)
    assert hidden_state_similarity(model, model, tokenizer, prompts) == pytest.approx(1.0)


def test_projections_on_unit_directions():
    unit = torch.tensor([0.0, 1.0, 0.0])
    states = torch.stack([torch.stack([2 * unit, 4 * unit])])  # [1 layer, 2 prompts, 3]
    assert projections(states, 10 * unit).tolist() == pytest.approx([3.0])
    per_prompt = torch.stack([unit, torch.tensor([1.0, 0.0, 0.0])])
    assert projections(states, per_prompt).tolist() == pytest.approx([1.0])  # (2 + 0) / 2


def test_choose_steering_picks_the_best_valid_setting(tiny, world):
    model, tokenizer = tiny
    task = world.task("plural")
    vector = extract_vectors(model, tokenizer, [task], k=2, n_prompts=16).vectors["plural"].vector
    prompts = instructed_set(task, "valid")
    chosen = choose_steering(model, tokenizer, prompts, vector, layers=[0, 2], scales=[0.5, 8.0])
    grid = {(layer, scale): steered_first_token_accuracy(model, tokenizer, prompts.prompts, prompts.answers,
                                                         vector, layer, scale)
            for layer in (0, 2) for scale in (0.5, 8.0)}
    assert (chosen.layer, chosen.scale) in grid
    assert chosen.valid_accuracy == max(grid.values())
    with pytest.raises(ValueError, match="at least one layer"):
        choose_steering(model, tokenizer, prompts, vector, layers=[], scales=[1.0])


def test_watch_training_observes_without_changing_training(tiny, world):
    model, tokenizer = tiny
    seen = []
    task = world.task("first_french")
    watched = finetune(model, tokenizer, task, method="full", steps=5, seed=0,
                       loss_fn=watch_training(2, lambda step, m: seen.append((step, m.training))))
    plain = finetune(model, tokenizer, task, method="full", steps=5, seed=0)
    assert seen == [(0, False), (2, False), (4, False)]
    assert watched.losses == pytest.approx(plain.losses)
    with pytest.raises(ValueError, match="at least 1"):
        watch_training(0, lambda step, m: None)


def test_an_unchanged_model_keeps_its_vectors(tiny, world):
    model, tokenizer = tiny
    tasks = [world.task("plural"), world.task("first")]
    start = extract_vectors(model, tokenizer, tasks, k=2, n_prompts=16)
    rows = experiment.compare_stage(model, model, tokenizer, tasks, start, start)
    for row in rows.values():
        assert row["iv_cosine"] == pytest.approx(1.0)
        assert row["heads_jaccard"] == 1.0
        assert row["hidden_cosine"] == pytest.approx(1.0)
        assert row["param_distance"] == 0.0
        assert row["if_exact_match"] > 0.8


def test_restoration_reports_the_vector_and_its_random_control(tiny, world):
    model, tokenizer = tiny
    task = world.task("plural")
    start = extract_vectors(model, tokenizer, [task], k=2, n_prompts=16)
    settings = {**experiment.SETTINGS, "scales": (1.0,)}
    out = experiment.restoration(model, tokenizer, [task], {"plural": start.vectors["plural"].vector}, settings)
    row = out["plural"]
    assert row["scale"] == 1.0 and 0 <= row["layer"] < 4
    assert set(row) >= {"exact_match", "first_token", "random_exact_match", "random_first_token"}
    minus = experiment.restoration(model, tokenizer, [task], {"plural": start.vectors["plural"].vector}, settings,
                                   sign=-1.0)
    assert minus["plural"]["scale"] == -1.0


def _stage(if_scores, iv, hidden, distance, restored=None):
    rows = {f"t{i}": {"if_exact_match": s, "iv_cosine": c, "hidden_cosine": h, "param_distance": distance,
                      "restored_exact_match": (restored or if_scores)[i], "subtracted_exact_match": s,
                      "restored_random_exact_match": s, "heads_jaccard": 1.0}
            for i, (s, c, h) in enumerate(zip(if_scores, iv, hidden))}
    return {"tasks": rows, "overlay": [{"old": [1.0], "new": [0.0]}, {"old": [0.5], "new": [1.0]}]}


def test_summary_restored_share_and_r2():
    original = _stage([1.0, 1.0, 1.0], [1, 1, 1], [1, 1, 1], 0.0)
    first = _stage([0.4, 0.6, 0.5], [0.4, 0.6, 0.5], [0.9, 0.9, 0.9], 2.0, restored=[0.8, 0.8, 0.8])
    last = _stage([0.2, 0.1, 0.3], [0.2, 0.1, 0.3], [0.5, 0.8, 0.1], 4.0)
    run = {"seed": 0, "stages": [original, first, last], "r2": experiment.fit_r2([first, last])}
    summary = experiment.summarise([run])
    assert summary["if_original"] == 1.0
    assert summary["if_finetuned"] == pytest.approx(0.5)
    assert summary["restored_share"] == pytest.approx(0.6)  # (0.8 - 0.5) / (1.0 - 0.5)
    assert summary["r2_iv"] == pytest.approx(1.0)  # IF equals the cosine here, point for point
    assert 0.0 <= summary["r2_hidden"] < 0.5
    assert summary["overlay_old_end"] == 0.5 and summary["overlay_new_end"] == 1.0


def test_the_prompt_format_reaches_every_prompt_built(world):
    from ivedu.prompts import QA_FORMAT

    prompts, owners = experiment.watch_prompts(world, experiment.SETTINGS, QA_FORMAT)
    assert len(prompts) == len(owners) == 10 * experiment.SETTINGS["watch_prompts"]
    assert all(p.startswith("Q:") and p.endswith("A:") for p in prompts)
    assert instructed_set(world.task("capital"), "test", QA_FORMAT).prompts[0].startswith("Q:")
