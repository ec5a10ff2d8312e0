"""Chapter 3's method: similarities, R², restoration, hidden states, overlay, a whole run."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

import ivedu.dynamics
from ivedu.controls import constant_score, paired_bootstrap_interval
from ivedu.dynamics import (Checkpoint, Fits, OverlayPoint, Restoration, SeedRun, Stage, TaskAtStage, analyse_stage,
                            checkpoint, choose_steering, compare_stage, cosine, effects_correlation, extract_vectors,
                            field_value, fit_points, fit_r2, fits_interval, hidden_state_similarity, instructed_set,
                            jaccard, overlay, parameter_distance, projections, r_squared, random_costs,
                            residual_states, restoration, restoration_lead, restored_share, run_seed, summarise,
                            tracking_lead, watch_all, watch_prompts, watch_training)
from ivedu.finetune import finetune, lora_model
from ivedu.intervention import Steering, steered_first_token_accuracy
from ivedu.prompts import TINY_FORMAT
from ivedu.settings import DynamicsSettings, ExtractionSettings, FinetuneSettings, sub_seed
from ivedu.study import ModelUnderStudy


SCAN = ExtractionSettings()  # chapter 2's scan: instructed clean prompts, the instruction removed in the corrupted


@pytest.fixture(scope="module")
def lm(tiny):
    model, tokenizer = tiny
    return ModelUnderStudy(model, tokenizer, TINY_FORMAT, "tiny")


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
    prompts = list(instructed_set(world.task("capital"), "valid", fmt=TINY_FORMAT).prompts[:5])
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


def test_choose_steering_picks_the_best_valid_setting(lm, world):
    task = world.task("plural")
    vector = extract_vectors(lm, [task], 2, 16, 0, SCAN).vectors["plural"].vector
    prompts = instructed_set(task, "valid", fmt=TINY_FORMAT)
    chosen = choose_steering(lm, prompts, vector, layers=[0, 2], scales=[0.5, 8.0], site="attention")
    grid = {(layer, scale): steered_first_token_accuracy(lm, prompts.prompts, prompts.answers, vector,
                                                         Steering(layer, scale, "attention"))
            for layer in (0, 2) for scale in (0.5, 8.0)}
    assert (chosen.steering.layer, chosen.steering.scale) in grid and chosen.steering.site == "attention"
    assert chosen.valid_accuracy == max(grid.values())
    with pytest.raises(ValueError, match="at least one layer"):
        choose_steering(lm, prompts, vector, layers=[], scales=[1.0], site="attention")


def test_watch_training_observes_without_changing_training(lm, world):
    seen = []
    task = world.task("first_french")
    five = FinetuneSettings(max_steps=5, stop_at=None)
    watched = finetune(lm, task, five, "full", 0, watch_training(2, lambda step, m: seen.append((step, m.training))))
    plain = finetune(lm, task, five, "full", 0)
    assert seen == [(0, False), (2, False), (4, False)]
    assert watched.losses == pytest.approx(plain.losses)
    with pytest.raises(ValueError, match="at least 1"):
        watch_training(0, lambda step, m: None)


def test_an_unchanged_model_keeps_its_vectors(lm, world):
    tasks = [world.task("plural"), world.task("first")]
    start = extract_vectors(lm, tasks, 2, 16, 0, SCAN)
    rows = compare_stage(lm.model, lm, tasks, start, start)
    assert list(rows) == ["plural", "first"]
    for name, row in rows.items():
        assert row.task == name
        assert row.iv_cosine == pytest.approx(1.0)
        assert row.heads_jaccard == 1.0
        assert row.hidden_cosine == pytest.approx(1.0)
        assert row.param_distance == 0.0
        assert row.heads == tuple(start.vectors[name].heads)
        assert row.if_exact_match > 0.8
        assert row.restored is None and row.subtracted is None


def test_restoration_reports_the_vector_and_its_random_control(lm, world):
    task = world.task("plural")
    vector = extract_vectors(lm, [task], 2, 16, 0, SCAN).vectors["plural"].vector
    every_layer = DynamicsSettings(scales=(1.0,), layers=None)
    row = restoration(lm.model, lm, [task], {"plural": vector}, every_layer)["plural"]
    assert isinstance(row, Restoration)
    assert row.scale == 1.0 and 0 <= row.layer < lm.layout.n_layers
    assert all(0.0 <= x <= 1.0 for x in (row.exact_match, row.first_token, row.random_exact_match,
                                         row.random_first_token))
    one_layer = DynamicsSettings(scales=(0.5, 1.0), layers=(2,))
    minus = restoration(lm.model, lm, [task], {"plural": vector}, one_layer, sign=-1.0)["plural"]
    assert minus.layer == 2 and minus.scale in (-0.5, -1.0)
    with pytest.raises(ValueError, match="subset"):
        restoration(lm.model, lm, [task], {"plural": vector}, DynamicsSettings(layers=(9,)))


def test_analyse_stage_restores_and_subtracts(lm, world):
    tasks = [world.task("plural"), world.task("first")]
    settings = DynamicsSettings(heads=2, n_prompts=16, scales=(1.0,), layers=(1,))
    start = extract_vectors(lm, tasks, settings.heads, settings.n_prompts, 0, SCAN)
    rows, now = analyse_stage(lm.model, lm, tasks, start, world.task("first_french"), 0, settings, extraction=SCAN)
    assert set(now.vectors) == {"plural", "first", "first_french"}  # the new task's vector is the one subtracted
    for name, row in rows.items():
        assert row.iv_cosine == pytest.approx(1.0)  # same model, same prompts: the same vector
        assert (row.restored.layer, row.restored.scale) == (1, 1.0)
        assert (row.subtracted.layer, row.subtracted.scale) == (1, -1.0)
        assert row.restored.random_cost <= settings.max_random_cost and row.restored.skipped is None
        assert row.restored.constant_em == constant_score(world.task(name), "test")
    plain, _ = analyse_stage(lm.model, lm, tasks, start, world.task("first_french"), 0, settings, restore=False,
                             extraction=SCAN)
    assert all(row.restored is None for row in plain.values())
    assert plain["plural"] == replace(rows["plural"], restored=None, subtracted=None)


def _row(name, if_score, iv, hidden, distance, restored=None):
    scores = Restoration(0, 1.0, if_score if restored is None else restored, 0.0, if_score, 0.0)
    return TaskAtStage(name, iv, 1.0, 1.0, hidden, distance, ((0, 0),), if_score, 0.0, scores,
                       Restoration(0, -1.0, if_score, 0.0, if_score, 0.0))


def _stage(index, if_scores, iv, hidden, distance, restored=None, points=()):
    rows = {f"t{i}": _row(f"t{i}", s, c, h, distance, (restored or {}).get(i))
            for i, (s, c, h) in enumerate(zip(if_scores, iv, hidden))}
    return Stage(index, None if index == 0 else f"new{index}", None if index == 0 else 10, rows, points)


def test_summary_restored_share_and_r2():
    points = (OverlayPoint(0, (1.0,), (0.0,)), OverlayPoint(10, (0.5,), (1.0,)))
    original = _stage(0, [1.0, 1.0, 1.0], [1, 1, 1], [1, 1, 1], 0.0)
    first = _stage(1, [0.4, 0.6, 0.5], [0.4, 0.6, 0.5], [0.9, 0.9, 0.9], 2.0, restored={0: 0.8, 1: 0.8, 2: 0.8},
                   points=points)
    last = _stage(2, [0.2, 0.1, 0.3], [0.2, 0.1, 0.3], [0.5, 0.8, 0.1], 4.0)
    run = SeedRun(0, (original, first, last), fit_r2([first, last]))
    summary = summarise([run], overlay_layer=0)
    assert summary.if_original == 1.0
    assert summary.first.if_finetuned == pytest.approx(0.5)
    assert summary.first.if_restored == pytest.approx(0.8)
    assert summary.first.restored_share == pytest.approx(0.6)  # (0.8 - 0.5) / (1.0 - 0.5)
    assert summary.final.if_finetuned == pytest.approx(0.2)
    assert summary.fits.r2_iv == pytest.approx(1.0)  # IF equals the cosine here, point for point
    assert 0.0 <= summary.fits.r2_hidden < 0.5
    assert summary.overlay_old_end == 0.5 and summary.overlay_new_end == 1.0
    assert summary.fits.n_points == 6
    assert summary.restored_lead.value == pytest.approx(0.3)  # restored 0.8 against the random control's 0.5
    assert summary.tracking.value == pytest.approx(tracking_lead(fit_points([first, last])))
    assert summary.skipped == summary.skipped_final == 0
    claims = summary.claims()
    assert claims["claim3"]["n_points"] == 6 and len(claims["claim3"]["interval"]) == 2
    assert claims["claim4"]["restored_share"] == pytest.approx(0.6) and claims["claim4"]["skipped"] == 0
    assert restored_share(0.5, 0.5, 0.7) != restored_share(0.5, 0.5, 0.7)  # nothing lost: NaN


def test_field_value_reads_into_restorations():
    row = _row("t", 0.5, 0.4, 0.9, 1.0, restored=0.75)
    assert field_value(row, "iv_cosine") == 0.4
    assert field_value(row, "restored.exact_match") == 0.75
    assert field_value(row, "subtracted.scale") == -1.0
    with pytest.raises(ValueError, match="restore=False"):
        field_value(replace(row, restored=None), "restored.exact_match")


def test_the_prompt_format_reaches_every_prompt_built(world):
    from ivedu.prompts import QA_FORMAT

    prompts, owners = watch_prompts(world.general, 8, fmt=QA_FORMAT)
    assert len(prompts) == len(owners) == 10 * 8
    assert all(p.startswith("Q:") and p.endswith("A:") for p in prompts)
    assert instructed_set(world.task("capital"), "test", fmt=QA_FORMAT).prompts[0].startswith("Q:")


def _small(task, n=4):
    """The task with only ``n`` valid and test examples: a whole run in seconds."""
    return replace(task, valid=task.valid[:n], test=task.test[:n])


def test_run_seed_trains_as_finetune_sequence_and_watches_the_first_stage(lm, world):
    general = [_small(world.task("plural")), _small(world.task("first"))]
    sequence = [_small(world.task("first_french")), _small(world.task("last_french"))]
    settings = DynamicsSettings(heads=2, n_prompts=8, scales=(1.0,), layers=(0,), watch_every=2, watch_prompts=2)
    training = FinetuneSettings(max_steps=4, stop_at=None, warmup_steps=1)
    run = run_seed(lm, general, sequence, 3, settings, training, SCAN)
    assert [s.stage for s in run.stages] == [0, 1, 2]
    assert [s.task for s in run.stages] == [None, "first_french", "last_french"]
    assert [s.steps for s in run.stages] == [None, 4, 4]
    assert [p.step for p in run.stages[1].overlay] == [0, 2, 4] and run.stages[2].overlay == ()
    assert all(row.restored is not None for s in run.stages[1:] for row in s.rows.values())
    assert isinstance(run.fits, Fits)
    # The first stage is finetune with the stage's sub-seed, LoRA merged.
    alone = finetune(lm, sequence[0], training, "lora", sub_seed(3, 0)).model.merge_and_unload()
    assert run.stages[1].rows["plural"].param_distance == pytest.approx(parameter_distance(lm.model, alone))
    # The step-0 snapshot is the original model's state: the overlay starts from it.
    prompts, owners = watch_prompts(general, 2, fmt=lm.fmt)
    start = extract_vectors(lm, general, 2, 8, 3, SCAN)
    first = overlay([(0, residual_states(lm.model, lm.tokenizer, prompts))], owners, start,
                    start.vectors["plural"].vector)[0]
    assert run.stages[1].overlay[0].old == pytest.approx(first.old)


# ----------------------------------------------------------------------------- the scale rule


def test_restoration_never_chooses_a_cell_a_random_vector_breaks(lm, world, monkeypatch):
    task = world.task("plural")
    vector = extract_vectors(lm, [task], 2, 16, 0, SCAN).vectors["plural"].vector
    settings = DynamicsSettings(scales=(0.5, 1.0), layers=(1, 2))
    valid = instructed_set(task, "valid", fmt=lm.fmt)
    best = choose_steering(lm, valid, vector, [1, 2], [0.5, 1.0], "attention").steering  # without the rule
    # A cost grid where the cell the valid prompts prefer is the one a random vector breaks.
    grid = {(layer, scale): 0.5 if (layer, scale) == (best.layer, best.scale) else 0.0
            for layer in (1, 2) for scale in (0.5, 1.0)}
    monkeypatch.setattr(ivedu.dynamics, "random_costs", lambda *args: grid)
    row = restoration(lm.model, lm, [task], {"plural": vector}, settings)["plural"]
    assert (row.layer, row.scale) != (best.layer, best.scale)
    assert row.random_cost == 0.0 and row.skipped is None
    # Every cell too costly: nothing is added, and the scores are the model's own.
    monkeypatch.setattr(ivedu.dynamics, "random_costs", lambda *args: {cell: 0.3 + 0.1 * i for i, cell in enumerate(grid)})
    skipped = restoration(lm.model, lm, [task], {"plural": vector}, settings)["plural"]
    test = instructed_set(task, "test", fmt=lm.fmt)
    plain = ivedu.dynamics.steered_scores(lm, test, None, None)
    assert skipped.layer is None and skipped.scale is None and "no safe scale" in skipped.skipped
    assert skipped.random_cost == pytest.approx(0.3)  # the cheapest cell's cost
    assert (skipped.exact_match, skipped.random_exact_match) == (plain["exact_match"], plain["exact_match"])
    with pytest.raises(ValueError, match="no cell of the grid is allowed"):
        choose_steering(lm, valid, vector, [1], [1.0], "attention", allowed=set())


def test_a_destructive_scale_is_never_chosen(lm, world):
    task = world.task("plural")
    vector = extract_vectors(lm, [task], 2, 16, 0, SCAN).vectors["plural"].vector
    valid = instructed_set(task, "valid", fmt=lm.fmt)
    costs = random_costs(lm, valid, vector, [1], [0.5, 1000.0], 0, "attention")
    settings = DynamicsSettings(scales=(0.5, 1000.0), layers=(1,))
    assert costs[(1, 1000.0)] > settings.max_random_cost >= costs[(1, 0.5)]  # the case is what it should be
    row = restoration(lm.model, lm, [task], {"plural": vector}, settings)["plural"]
    assert row.scale == 0.5 and row.random_cost == costs[(1, 0.5)]
    only_huge = restoration(lm.model, lm, [task], {"plural": vector}, replace(settings, scales=(1000.0,)))["plural"]
    assert only_huge.skipped is not None and only_huge.scale is None


# ----------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_of_an_unchanged_model_is_the_original(lm, world):
    general = [_small(world.task("plural")), _small(world.task("first"))]
    settings = DynamicsSettings(heads=2, n_prompts=8)
    start = extract_vectors(lm, general, 2, 8, 0, SCAN)
    original = compare_stage(lm.model, lm, general, start, start)
    # A fresh LoRA adapter changes nothing: merged, it is the original model (and is merged, not compared as is).
    point = checkpoint(lm.model, lm.with_model(lora_model(copy.deepcopy(lm.model))), general, start, 1, 7, 0, settings,
                       SCAN)
    assert (point.stage, point.step) == (1, 7)
    assert point.rows == original


def test_checkpoints_along_training_leave_the_training_unchanged(lm, world, monkeypatch):
    general = [_small(world.task("plural")), _small(world.task("first"))]
    sequence = [_small(world.task("first_french")), _small(world.task("last_french"))]
    training = FinetuneSettings(max_steps=5, stop_at=None, warmup_steps=1)
    trained = []
    real = ivedu.dynamics.finetune_sequence
    monkeypatch.setattr(ivedu.dynamics, "finetune_sequence",
                        lambda *a, **k: trained.append(real(*a, **k)) or trained[-1])
    settings = DynamicsSettings(heads=2, n_prompts=8, scales=(1.0,), layers=(1,), watch_every=3, watch_prompts=2)
    plain = run_seed(lm, general, sequence, 3, settings, training, SCAN)
    watched = run_seed(lm, general, sequence, 3, replace(settings, checkpoint_every=2), training, SCAN)
    assert plain.checkpoints == ()
    # Every 2 steps of every stage, not step 0 (the stage before's end) nor the stage's end (its own analysis).
    assert [(c.stage, c.step) for c in watched.checkpoints] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert [p.step for p in watched.stages[1].overlay] == [0, 3, 5]  # the overlay watcher still runs on its own steps
    assert [s.losses for s in trained[1].stages] == [s.losses for s in trained[0].stages]
    assert watched.stages == plain.stages
    assert all(set(c.rows) == {"plural", "first"} and all(r.restored is None for r in c.rows.values())
               for c in watched.checkpoints)
    assert watched.checkpoints[0].rows["plural"].param_distance > 0
    assert (plain.fits.n_points, watched.fits.n_points) == (2 * 2, 2 * (2 + 4))
    assert watched.fits == fit_r2(watched.stages[1:], watched.checkpoints)


def test_watch_all_calls_each_observer_on_its_own_steps():
    seen = []
    loss_fn = watch_all([(2, lambda step, m: seen.append(("a", step))), (3, lambda step, m: seen.append(("b", step)))])

    class Model(torch.nn.Module):
        def forward(self, **batch):
            return type("Out", (), {"loss": torch.tensor(0.0)})()

    for step in range(7):
        loss_fn(Model(), {}, step)
    assert seen == [("a", 0), ("b", 0), ("a", 2), ("b", 3), ("a", 4), ("a", 6), ("b", 6)]
    assert watch_all([]) is None


def test_fit_r2_takes_every_checkpoints_points():
    first = _stage(1, [0.4, 0.6, 0.5], [0.4, 0.6, 0.5], [0.9, 0.9, 0.8], 2.0)
    later = _stage(1, [0.9, 0.8, 0.7], [0.9, 0.8, 0.7], [0.1, 0.5, 0.3], 1.0)
    point = Checkpoint(1, 5, later.rows)
    fits = fit_r2([first], [point])
    assert fits.n_points == 6 and fit_r2([first, later]).n_points == 6
    assert fits == fit_r2([first, later])  # a checkpoint is a point like a stage's end
    assert fits.r2_iv == pytest.approx(1.0)
    assert fits.r2_hidden == pytest.approx(r_squared([0.9, 0.9, 0.8, 0.1, 0.5, 0.3], [0.4, 0.6, 0.5, 0.9, 0.8, 0.7]))
    assert fit_points([first], [point]).shape == (6, 4)


# ----------------------------------------------------------------------------- intervals


def _points(iv, hidden, params, y):
    return np.column_stack([iv, hidden, params, y]).astype(float)


def test_tracking_lead_and_its_interval():
    rng = np.random.default_rng(1)
    y = rng.uniform(size=40)
    noise = [rng.uniform(size=40) for _ in range(3)]
    tracks = _points(y + 0.05 * noise[0], noise[1], noise[2], y)  # the vector's similarity follows y
    lead = tracking_lead(tracks)
    r2 = [r_squared(tracks[:, i], y) for i in range(3)]
    assert lead == pytest.approx(r2[0] - max(r2[1], r2[2]))
    effect = fits_interval([tracks, tracks[::-1]], n=500)
    assert effect.value == pytest.approx(lead)
    assert 0 < effect.interval[0] <= effect.value <= effect.interval[1]
    assert fits_interval([tracks, tracks[::-1]], n=500) == effect  # seeded: the same interval again
    baseline_wins = _points(noise[0], y + 0.05 * noise[1], noise[2], y)
    assert fits_interval([baseline_wins], n=500).interval[1] < 0
    # A resample where a similarity does not vary explains nothing, as r_squared says.
    flat = _points(np.ones(5), np.arange(5), np.arange(5), np.arange(5))
    assert tracking_lead(flat) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least 3"):
        fits_interval([tracks[:2]])


def test_restoration_lead_pairs_tasks_and_seeds():
    original = _stage(0, [1.0, 1.0, 1.0], [1, 1, 1], [1, 1, 1], 0.0)
    first = _stage(1, [0.4, 0.6, 0.5], [0.4, 0.6, 0.5], [0.9, 0.9, 0.9], 2.0, restored={0: 0.8, 1: 0.8, 2: 0.8})
    last = _stage(2, [0.2, 0.1, 0.3], [0.2, 0.1, 0.3], [0.5, 0.8, 0.1], 4.0)  # restored = random here
    runs = [SeedRun(s, (original, first, last), fit_r2([first, last])) for s in (0, 1)]
    lead = restoration_lead(runs, 1, n=500)
    assert lead.value == pytest.approx(0.3)  # (0.4 + 0.2 + 0.3) / 3, the random control scoring as fine-tuned
    assert lead.interval == paired_bootstrap_interval([0.8] * 6, [0.4, 0.6, 0.5] * 2, n=500)
    assert restoration_lead(runs, -1, n=500).interval == (0.0, 0.0)


def test_the_summary_carries_what_the_scorecard_judges(tmp_path):
    from ivedu.experiments.dynamics import summary_json
    from ivedu.results import result_path, save_result
    from ivedu.scorecard import MIN_POINTS, judge

    original = _stage(0, [1.0, 1.0, 1.0], [1, 1, 1], [1, 1, 1], 0.0)
    first = _stage(1, [0.4, 0.6, 0.5], [0.4, 0.6, 0.5], [0.9, 0.9, 0.8], 2.0, restored={0: 0.8, 1: 0.8, 2: 0.8},
                   points=(OverlayPoint(0, (1.0,), (0.0,)),))
    last = _stage(2, [0.2, 0.1, 0.3], [0.25, 0.1, 0.3], [0.5, 0.8, 0.1], 4.0, restored={0: 0.5, 1: 0.4, 2: 0.5})
    rng = np.random.default_rng(0)
    checkpoints = []
    for step in range(1, 9):  # the vector's cosine follows instruction following; the baselines do not
        scores = rng.uniform(size=3)
        checkpoints.append(Checkpoint(1, step, _stage(1, scores, scores + 0.02 * rng.uniform(size=3),
                                                      rng.uniform(size=3), float(rng.uniform())).rows))

    def judged(points):
        runs = [SeedRun(0, (original, first, last), fit_r2([first, last], points), tuple(points))]
        save_result({"summary": summary_json(runs, 0), "settings": {"dynamics": {"max_random_cost": 0.1}},
                     "seeds": 1}, result_path("tiny", "dynamics", tmp_path))
        return judge(3, "tiny", tmp_path), judge(4, "tiny", tmp_path)

    few, restored = judged(checkpoints[:2])
    assert few.verdict == "not measured enough" and few.checks[1].value == 3 * (2 + 2) < MIN_POINTS
    assert restored.verdict == "holds" and restored.headline == pytest.approx(0.3)  # restored share 0.6
    assert restored.headline_interval[0] > 0
    enough, _ = judged(checkpoints)
    assert enough.checks[1].value == 3 * (2 + 8) >= MIN_POINTS
    assert enough.verdict == "holds" and enough.headline_interval[0] > 0


def short_dynamics(stages: int):
    """Chapter 3's tiny settings cut to seconds: two general tasks, ``stages`` new tasks of two steps each."""
    from ivedu.settings import settings

    s = settings("ch3", "tiny")
    return replace(s, finetune=replace(s.finetune, max_steps=2, stop_at=None),
                   dynamics=replace(s.dynamics, heads=2, n_prompts=8, scales=(1.0,), layers=(1,), watch_every=1,
                                    watch_prompts=2, checkpoint_every=1),
                   data=replace(s.data, general_tasks=("plural", "first"), sequence=s.data.sequence[:stages]))


def test_a_resumed_dynamics_command_reuses_the_finished_seeds_and_gives_the_same_result(tmp_path, monkeypatch):
    import json

    import ivedu.experiments.dynamics as command
    from ivedu.experiments.checkpoints import Checkpoints

    short = short_dynamics(2)
    first = command.run(short, [0], checkpoints=Checkpoints.for_run("dynamics", short, tmp_path))
    assert first["resumed"] == []
    again = Checkpoints.for_run("dynamics", short, tmp_path)
    assert [p.name for p in again.folder.iterdir()] == ["seed0.json"]
    kept = SeedRun.from_dict(json.loads((again.folder / "seed0.json").read_text()))
    assert kept.checkpoints and kept.stages[1].overlay and kept.stages[1].rows
    assert all(isinstance(h, tuple) for row in kept.stages[1].rows.values() for h in row.heads)
    # each stage's new-task scores (the matrix R) are kept: whether a stage learnt its task
    assert len(kept.new_before) == 2 and [len(row) for row in kept.new_after] == [2, 2]
    assert first["per_seed"][0]["new_tasks"]["after_stage"] == [list(row) for row in kept.new_after]
    monkeypatch.setattr(command, "run_seed", lambda *a, **k: pytest.fail("a kept seed was trained again"))
    second = command.run(short, [0], checkpoints=again)
    assert second["resumed"] == ["seed0"]
    assert json.dumps({**second, "resumed": []}) == json.dumps(first)


def test_a_seed_stopped_after_a_stage_resumes_there_and_gives_the_same_result(tmp_path, monkeypatch):
    import json

    import ivedu.dynamics as steps
    import ivedu.experiments.dynamics as command
    from ivedu.experiments.checkpoints import Checkpoints

    short = short_dynamics(3)
    whole = command.run(short, [0], checkpoints=Checkpoints.for_run("dynamics", short, tmp_path / "whole"))

    class Stopped(Exception):
        pass

    real = steps.finetune_sequence

    def stopped_after_two_stages(*args, keep, **kwargs):
        def keep_then_stop(state):
            keep(state)
            if state.done == 2:
                raise Stopped
        return real(*args, keep=keep_then_stop, **kwargs)

    folder = tmp_path / "stopped"
    monkeypatch.setattr(steps, "finetune_sequence", stopped_after_two_stages)
    with pytest.raises(Stopped):
        command.run(short, [0], checkpoints=Checkpoints.for_run("dynamics", short, folder))
    monkeypatch.setattr(steps, "finetune_sequence", real)
    partial = Checkpoints.for_run("dynamics", short, folder).partial("seed0")
    kept = json.loads((partial.folder / "state.json").read_text())
    assert kept["data"]["done"] == 2 and len(kept["data"]["stages"]) == 3  # the original and two stages
    import ivedu.finetune as training

    trained, real_finetune = [], training.finetune
    monkeypatch.setattr(training, "finetune",
                        lambda lm, task, *a, **k: trained.append(task.name) or real_finetune(lm, task, *a, **k))
    resumed = command.run(short, [0], checkpoints=Checkpoints.for_run("dynamics", short, folder))
    assert trained == [short.data.sequence[2]]  # only the stage the stopped run had not finished
    assert json.dumps(resumed) == json.dumps(whole)
    assert not partial.folder.exists()  # the seed is kept whole: its state part-way is gone
