"""The guided loss: each term is what the authors' code computes, and the training loop runs it."""

import copy
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from ivedu.corpus import collate
from ivedu.finetune import finetune, lora_model, task_sequences
from ivedu.guided import (TERMS, GuidedObjective, GuidedSettings, answer_start_positions, check_settings, gated,
                          head_mse, kd_loss, new_task_vectors, progressive_weight)
from ivedu.prompts import TINY_FORMAT
from ivedu.settings import FinetuneSettings, settings
from ivedu.study import ModelUnderStudy


def few_prompts(vector_prompts: int = 8, **guided):
    """Chapter 4's tiny settings with a quick vector extraction."""
    s = settings("ch4", "tiny")
    return dataclasses.replace(s, guided=dataclasses.replace(s.guided, vector_prompts=vector_prompts, **guided))


@pytest.fixture(scope="module")
def batch(tiny, world):
    model, tokenizer = tiny
    sequences = task_sequences(ModelUnderStudy(model, tokenizer, TINY_FORMAT), world.task("first_french"))[:4]
    return collate(sequences, tokenizer.pad_token_id), sequences


@pytest.fixture(scope="module")
def extracted(tiny, world):
    """``(vectors, reports)`` of two new tasks, from the original model."""
    model, tokenizer = tiny
    lm = ModelUnderStudy(model, tokenizer, TINY_FORMAT, "tiny")
    return new_task_vectors(lm, [world.task("last_french"), world.task("middle")], few_prompts())


@pytest.fixture(scope="module")
def vector(extracted):
    """``last_french``'s vector and report."""
    vectors, reports = extracted
    return vectors["last_french"], reports["last_french"]


def test_answer_start_is_the_last_prompt_token_of_each_row(batch):
    tensors, sequences = batch
    positions = answer_start_positions(tensors["labels"])
    for row, seq in enumerate(sequences):
        first_learnt = next(i for i, label in enumerate(seq.labels) if label != -100)
        assert positions[row] == first_learnt - 1
        assert seq.labels[positions[row]] == -100


def test_answer_start_refuses_rows_without_an_answer():
    with pytest.raises(ValueError, match="at least one learnt"):
        answer_start_positions(torch.tensor([[-100, -100], [-100, 5]]))
    with pytest.raises(ValueError, match="position 0"):
        answer_start_positions(torch.tensor([[5, 6]]))


def test_kd_loss_is_the_reverse_kl_of_the_reference_code():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 5, 11), torch.randn(3, 5, 11)
    reference = F.kl_div(F.log_softmax(teacher / 2, -1), F.softmax(student / 2, -1), reduction="batchmean")
    torch.testing.assert_close(kd_loss(student, teacher, 2.0), reference)
    assert not torch.isclose(kd_loss(student, teacher), kd_loss(teacher, student))  # direction matters
    assert kd_loss(student, student) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_mask_drops_positions_and_only_the_student_gets_gradients():
    torch.manual_seed(1)
    student = torch.randn(2, 4, 7, requires_grad=True)
    teacher = torch.randn(2, 4, 7, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    full = kd_loss(student, teacher, 2.0, None)
    masked = kd_loss(student, teacher, 2.0, mask)
    changed_padding = teacher.detach().clone()
    changed_padding[0, 2:] += 5.0
    assert masked.item() == pytest.approx(kd_loss(student, changed_padding, 2.0, mask).item(), abs=1e-6)
    assert masked.item() < full.item()
    masked.backward()
    assert student.grad is not None and teacher.grad is None
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(student, teacher[:, :2])


def test_gates_pass_large_values_and_zero_small_ones_without_gradient():
    big, small = torch.tensor(0.5, requires_grad=True), torch.tensor(0.05, requires_grad=True)
    assert gated(big, 0.1) is big
    out = gated(small, 0.1)
    out.backward()
    assert out.item() == 0.0 and small.grad.item() == 0.0


def test_progressive_weight_falls_linearly_from_one_to_zero():
    weights = [progressive_weight(s, 5) for s in range(5)]
    assert weights == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert progressive_weight(0, 1) == 1.0
    assert progressive_weight(9, 5) == 0.0  # past its schedule the vector stays off
    for bad in ((-1, 5), (0, 0)):
        with pytest.raises(ValueError):
            progressive_weight(*bad)


def test_head_mse_sums_the_chosen_heads_at_each_rows_position():
    student = {0: torch.zeros(2, 3, 4, 2)}
    teacher = {0: torch.zeros(2, 3, 4, 2)}
    student[0][0, 1, 2] = 1.0   # row 0, position 1, head 2: both features off by 1
    student[0][1, 0, 2] = 9.0   # row 1 at a position the term does not read
    positions = torch.tensor([1, 2])
    assert float(head_mse(student, teacher, [(0, 2)], positions, gate=0.0)) == pytest.approx(0.5)
    assert float(head_mse(student, teacher, [(0, 2), (0, 1)], positions, gate=0.0)) == pytest.approx(0.5)
    assert float(head_mse(student, teacher, [(0, 2)], positions, gate=0.6)) == 0.0
    with pytest.raises(ValueError, match="no heads"):
        head_mse(student, teacher, [], positions)


def test_settings_drop_one_term_at_a_time():
    s = GuidedSettings()
    assert s.without("kl_start").kl_start == 0 and s.without("kl_start").kl_all == s.kl_all
    assert s.without("progressive").progressive is False
    assert len({s.without(t) for t in TERMS}) == len(TERMS)
    with pytest.raises(ValueError, match="unknown term"):
        s.without("ce")


def test_the_new_task_vectors_have_the_hidden_size_the_profiles_heads_and_a_report(tiny, world, extracted):
    model, tokenizer = tiny
    vectors, reports = extracted
    assert set(vectors) == set(reports) == {"last_french", "middle"}
    for name, iv in vectors.items():
        report = reports[name]
        assert iv.vector.shape == (model.config.hidden_size,) and len(iv.heads) == 2 and iv.task == name
        assert report.task == name and report.heads == iv.heads and report.norm == pytest.approx(iv.norm)
        assert 0 <= report.corrupted_prob <= 1 and 0 <= report.clean_prob <= 1
        assert 0 <= report.bare_accuracy <= 1 and 0 <= report.with_vector_accuracy <= 1
    # the half-known task's vector alone makes the model answer more instruction-less prompts
    assert reports["last_french"].with_vector_accuracy > reports["last_french"].bare_accuracy
    lm = ModelUnderStudy(model, tokenizer, TINY_FORMAT, "tiny")
    three, _ = new_task_vectors(lm, [world.task("middle")], few_prompts(vector_heads=3))
    assert len(three["middle"].heads) == 3 and three["middle"].heads[:2] == vectors["middle"].heads


def test_student_equal_to_teacher_costs_only_cross_entropy(tiny, batch, vector):
    """A fresh LoRA adapter is the identity: with the full vector on both sides, every extra term is 0."""
    model, _ = tiny
    tensors, _ = batch
    student = lora_model(copy.deepcopy(model))
    objective = GuidedObjective(model, vector[0].vector, vector[0].heads, GuidedSettings(), steps=10)
    loss = objective(student, tensors, 0)
    terms = objective.history[0]
    assert terms["kl_start"] == terms["kl_all"] == terms["head_mse"] == 0.0 and terms["vector_weight"] == 1.0
    assert loss.item() == pytest.approx(terms["ce"])
    assert terms["ce"] != pytest.approx(student(**tensors).loss.item())  # the student's CE is with the vector


def test_the_teacher_vector_makes_the_answer_start_kl_nonzero(tiny, batch, vector):
    model, _ = tiny
    tensors, _ = batch
    student = lora_model(copy.deepcopy(model))
    loss = GuidedSettings(progressive=False, kl_gate=0.0, scale=3.0)
    objective = GuidedObjective(model, vector[0].vector, vector[0].heads, loss, steps=10)
    objective(student, tensors, 0)
    assert objective.history[0]["kl_start"] > 0
    no_vector = GuidedObjective(model, None, vector[0].heads, loss, steps=10)
    no_vector(student, tensors, 0)
    assert no_vector.history[0]["kl_start"] == pytest.approx(0.0, abs=1e-6)


def test_guided_training_runs_in_the_finetune_loop_and_never_touches_the_teacher(tiny, world, vector):
    model, tokenizer = tiny
    before = {n: p.clone() for n, p in model.named_parameters()}
    objective = GuidedObjective(model, vector[0].vector, vector[0].heads, GuidedSettings(kl_gate=0.0, mse_gate=0.0),
                                steps=3)
    three = FinetuneSettings(max_steps=3, lr_lora=1e-3, schedule="linear", stop_at=None)
    result = finetune(ModelUnderStudy(model, tokenizer, TINY_FORMAT), world.task("last_french"), three, "lora", 0,
                      objective)
    assert result.steps == 3 and len(objective.history) == 3
    assert [h["vector_weight"] for h in objective.history] == [1.0, 0.5, 0.0]
    assert objective.history[-1]["kl_all"] > 0  # the student has moved away from the teacher
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_bad_settings_are_refused(tiny, vector):
    model, _ = tiny
    with pytest.raises(IndexError):
        check_settings(model, GuidedSettings(layer=9))
    with pytest.raises(ValueError, match="site"):
        check_settings(model, GuidedSettings(site="mlp"))
    with pytest.raises(ValueError, match="must be >= 0"):
        check_settings(model, GuidedSettings(kl_all=-1.0))
    with pytest.raises(ValueError, match="needs a vector"):
        GuidedObjective(model, None, vector[0].heads, GuidedSettings(), steps=3)
    with pytest.raises(ValueError, match="heads"):
        GuidedObjective(model, vector[0].vector, (), GuidedSettings(), steps=3)
    with pytest.raises(IndexError):  # checked when the objective is built, before any training step
        GuidedObjective(model, vector[0].vector, vector[0].heads, GuidedSettings(layer=4), steps=3)
    with pytest.raises(ValueError, match="temperature"):
        check_settings(model, GuidedSettings(temperature=0.0))


def test_the_experiment_runs_end_to_end_on_a_short_budget():
    from ivedu.experiments.guided import compare

    s = settings("ch4", "tiny")
    short = dataclasses.replace(
        s, finetune=dataclasses.replace(s.finetune, stop_at=None),
        guided=dataclasses.replace(s.guided, max_steps=2, vector_prompts=8),
        data=dataclasses.replace(s.data, k_shots=0, general_tasks=("sentiment",)))
    result = compare(short, [0], ("middle", "last_french"), ("plain_lora", "iv_guided"), ablation=False)
    for name in ("plain_lora", "iv_guided"):
        assert {"gp", "ip", "ap", "gp_std", "ip_std", "ap_std", "steps", "n_seeds"} <= set(result["summary"][name])
        assert 0 <= result["summary"][name]["gp"] <= 1 and result["summary"][name]["steps"] == 4
    assert result["criterion"] == {} and result["ablation"] == {}  # no random_vector run: no criterion
    assert set(result["vectors"][0]) == {"middle", "last_french"}
    assert set(result["vectors"][0]["middle"]) == {"heads", "norm", "clean_prob", "corrupted_prob", "max_effect",
                                                   "bare_accuracy", "with_vector_accuracy"}
    assert set(result["general_before"]["if"]) == {"sentiment"}
    assert [r["method"] for r in result["per_seed"]] == ["plain_lora", "iv_guided"]
    assert result["per_seed"][0]["steps"] == [2, 2] and len(result["per_seed"][0]["R"]) == 2


def test_a_resumed_comparison_reuses_the_finished_runs_and_gives_the_same_result(tmp_path, monkeypatch):
    import ivedu.experiments.guided as guided
    from ivedu.experiments.checkpoints import Checkpoints

    s = settings("ch4", "tiny")
    short = dataclasses.replace(
        s, finetune=dataclasses.replace(s.finetune, stop_at=None),
        guided=dataclasses.replace(s.guided, max_steps=2, vector_prompts=8),
        data=dataclasses.replace(s.data, k_shots=0, general_tasks=("sentiment",)))
    names = ("plain_lora", "iv_guided")
    first = guided.compare(short, [0], ("middle",), names, ablation=False,
                           checkpoints=Checkpoints.for_run("guided", short, tmp_path))
    assert first["resumed"] == []
    again = Checkpoints.for_run("guided", short, tmp_path)
    assert sorted(p.name for p in again.folder.iterdir()) == ["seed0-iv_guided.json", "seed0-plain_lora.json"]
    monkeypatch.setattr(guided, "run_method", lambda *a, **k: pytest.fail("a kept run was trained again"))
    second = guided.compare(short, [0], ("middle",), names, ablation=False, checkpoints=again)
    assert second["resumed"] == ["seed0-plain_lora", "seed0-iv_guided"]
    assert json.loads(json.dumps({**second, "resumed": []})) == json.loads(json.dumps(first))
    other = dataclasses.replace(short, guided=dataclasses.replace(short.guided, max_steps=3))
    assert Checkpoints.for_run("guided", other, tmp_path).folder != again.folder, \
        "runs of other settings are never reused"
    unread = dataclasses.replace(short, dynamics=dataclasses.replace(short.dynamics, heads=3))
    assert Checkpoints.for_run("guided", unread, tmp_path).folder == again.folder, \
        "a setting the command does not read does not matter"


def test_the_control_sequence_is_half_known_by_the_original_model_and_chapter_1s_is_not(tiny, world):
    """Chapter 4's premise for ``guided_half_known``: under their instruction the shipped model
    already half-does that sequence's tasks (first-token accuracy), and cannot do chapter 1's."""
    from ivedu.evaluation import instruction_following_score
    from ivedu.experiments import experiment, guided_half_known

    assert experiment("guided_half_known") is guided_half_known.run
    model, tokenizer = tiny
    control = settings("ch4", "tiny").data.control_sequence

    def accuracy(name: str) -> float:
        return instruction_following_score(ModelUnderStudy(model, tokenizer, TINY_FORMAT), world.task(name),
                                           "test").first_token_accuracy

    assert len(control) == 3 and all(world.task(n).is_new for n in control)
    half_known = {n: accuracy(n) for n in control}
    assert all(0.3 <= a < 0.95 for a in half_known.values()), half_known
    unknown = {n: accuracy(n) for n in ("first_french", "middle")}
    assert all(a <= 0.05 for a in unknown.values()), unknown
