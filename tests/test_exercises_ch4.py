"""Chapter 4's checkers pass on the reference solutions and fail on planted wrong answers, on the
tiny model and, for the steered teacher, the guided objective and the EWC penalty, on the
real-model profile (smol)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from exercise_solutions import small, smol_world, solution, stub
from ivedu.continual import EWCObjective
from ivedu.exercises import ExerciseError
from ivedu.exercises.ch4 import (check_ewc_penalty, check_guided_kl, check_guided_objective, check_teacher_logits,
                                 guided_terms_reference, teacher_logits_reference)
from ivedu.guided import kd_loss


def teacher_steered_at_the_last_position(teacher, batch, vector, layer, scale=1.0, site="attention"):
    """Wrong: adds the vector at position -1, a pad or answer token of a right-padded batch."""
    from ivedu.hooks import add_to_residual

    with torch.no_grad(), add_to_residual(teacher, layer, vector, positions="last", scale=scale, site=site):
        return teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def teacher_steered_at_the_first_answer_token(teacher, batch, vector, layer, scale=1.0, site="attention"):
    """Wrong: adds the vector at the first answer token instead of the last prompt token."""
    from ivedu.hooks import add_to_residual

    positions = (batch["labels"] != -100).long().argmax(-1)
    with torch.no_grad(), add_to_residual(teacher, layer, vector, positions=positions, scale=scale, site=site):
        return teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def guided_terms_schedule_of_the_stage(student, teacher, batch, vector, heads, settings, step, steps):
    """Wrong: fades the student's vector over the stage's steps, ignoring settings.progressive_steps."""
    return guided_terms_reference(student, teacher, batch, vector, heads, replace(settings, progressive_steps=None),
                                  step, steps)


def guided_terms_without_the_student_vector(student, teacher, batch, vector, heads, settings, step, steps):
    """Wrong: forgets the progressive intervention (d): the student never gets the vector."""
    terms = guided_terms_reference(student, teacher, batch, vector, heads, replace(settings, progressive=False),
                                   step, steps)
    return terms


def test_teacher_logits_checker():
    check_teacher_logits(teacher_logits_reference)
    check_teacher_logits(solution("04_guided_training", "teacher_logits"))
    with pytest.raises(ExerciseError, match="(?s)last_french.*positions='last' would add"):
        check_teacher_logits(teacher_steered_at_the_last_position)
    with pytest.raises(ExerciseError, match="one before"):
        check_teacher_logits(teacher_steered_at_the_first_answer_token)
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_teacher_logits(stub)


def test_guided_objective_checker():
    check_guided_objective(solution("04_guided_training", "guided_terms"))
    with pytest.raises(ExerciseError, match="step 4 of a 10-step schedule"):
        check_guided_objective(guided_terms_schedule_of_the_stage)
    with pytest.raises(ExerciseError, match="vector_weight|ce"):
        check_guided_objective(guided_terms_without_the_student_vector)
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_guided_objective(stub)


def test_guided_kl_checker():
    check_guided_kl(kd_loss)

    def forward_kl(student, teacher, temperature):  # planted: KL(teacher || student), the usual distillation
        return F.kl_div(F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1),
                        reduction="batchmean")

    with pytest.raises(ExerciseError, match="reverse"):
        check_guided_kl(forward_kl)

    def mean_over_positions(student, teacher, temperature):  # planted: divides 3-D logits by batch * seq
        per = F.kl_div(F.log_softmax(teacher / temperature, -1), F.softmax(student / temperature, -1),
                       reduction="none").sum(-1)
        return per.mean()

    with pytest.raises(ExerciseError, match=r"\[3, 5, 9\]"):
        check_guided_kl(mean_over_positions)
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_guided_kl(stub)


def ewc_without_half(model, anchor, fisher, lam):
    """Wrong: drops EWC's 1/2."""
    return lam * sum((fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in model.named_parameters())


def ewc_in_float64(model, anchor, fisher, lam):
    """Right, summed in float64 one parameter at a time: the tolerance must allow another order."""
    total = 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            total += float((fisher[name].double() * (p.double() - anchor[name].double()) ** 2).sum())
    return torch.tensor(lam / 2 * total)


def test_ewc_penalty_checker():
    check_ewc_penalty(lambda m, a, f, lam: lam / 2 * EWCObjective(a, f, lam).penalty(m))
    check_ewc_penalty(ewc_in_float64)
    with pytest.raises(ExerciseError, match="lam / 2"):
        check_ewc_penalty(ewc_without_half)


# ---------------------------------------------------------------- on the real-model profile (smol)

@pytest.fixture(scope="module")
def smol_case(smol):
    """Chapter 4's exercise inputs on the smol profile: a batch of the second new task, a fresh LoRA
    student of SmolLM2, and a vector of the task's top heads (a few prompts) at the profile's layer."""
    import copy

    from ivedu.corpus import collate
    from ivedu.extraction import clean_prompts, corrupted_prompts, scan_task
    from ivedu.finetune import lora_model, task_sequences
    from ivedu.intervention import instruction_vector
    from ivedu.study import ModelUnderStudy

    settings, model, tokenizer, fmt, world = smol_world(smol, "ch4")
    task = small(world.task(settings.data.sequence[1]), 4)
    lm = ModelUnderStudy(model, tokenizer, fmt, "smol")
    batch = collate(task_sequences(lm, task)[:4], tokenizer.pad_token_id)
    scan = scan_task(lm, task, clean_prompts(task, "train", n=4, fmt=fmt),
                     corrupted_prompts(task, "train", n=4, fmt=fmt))
    iv = instruction_vector(model, scan.mean_activations, scan.top_heads(4))
    student = lora_model(copy.deepcopy(model), settings.finetune.lora_rank, settings.finetune.lora_alpha,
                         settings.finetune.lora_targets)
    return settings.guided.loss, model, student, batch, iv


def test_teacher_logits_check_on_the_real_model(smol_case, capsys):
    loss, model, _, batch, iv = smol_case
    where = {"teacher": model, "batch": batch, "vector": iv.vector, "layer": loss.layer, "scale": loss.scale,
             "site": loss.site}
    check_teacher_logits(solution("04_guided_training", "teacher_logits"), **where)
    assert "4 batches" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_teacher_logits(stub, **where)
    with pytest.raises(ExerciseError):
        check_teacher_logits(teacher_steered_at_the_last_position, **where)


def test_guided_objective_check_on_the_real_model(smol_case, capsys):
    loss, model, student, batch, iv = smol_case
    where = {"student": student, "teacher": model, "batch": batch, "vector": iv.vector, "heads": iv.heads,
             "settings": loss, "steps": loss.progressive_steps}
    check_guided_objective(solution("04_guided_training", "guided_terms"), **where)
    assert "7 batches" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_guided_objective(stub, **where)
    with pytest.raises(ExerciseError):
        check_guided_objective(guided_terms_schedule_of_the_stage, **where)


def test_ewc_penalty_check_on_the_real_model(smol, capsys):
    model, _ = smol
    before = [p.requires_grad for p in model.parameters()]
    check_ewc_penalty(solution("04_guided_training", "ewc_penalty"), model=model)
    check_ewc_penalty(ewc_in_float64, model=model)
    assert capsys.readouterr().out.count("4 models") == 2
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_ewc_penalty(stub, model=model)
    with pytest.raises(ExerciseError, match="lam / 2"):
        check_ewc_penalty(ewc_without_half, model=model)
    assert [p.requires_grad for p in model.parameters()] == before, "the check must leave the model as it was"
    model.requires_grad_(False)  # a frozen model (a teacher): the reference penalises trainable weights only
    try:
        check_ewc_penalty(solution("04_guided_training", "ewc_penalty"), model=model)
        assert not any(p.requires_grad for p in model.parameters())
    finally:
        for p, grad in zip(model.parameters(), before):
            p.requires_grad_(grad)
