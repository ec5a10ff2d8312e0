"""Chapter 4's checkers pass on the reference solutions and fail on planted wrong answers."""

import pytest
import torch
import torch.nn.functional as F

from ivedu.continual import EWCObjective
from ivedu.exercises import ExerciseError
from ivedu.exercises.ch4 import check_answer_start, check_ewc_penalty, check_guided_kl, check_progressive_weight
from ivedu.guided import answer_start_positions, kd_loss, progressive_weight


def test_answer_start_checker():
    check_answer_start(answer_start_positions)

    def last_non_pad(labels):  # planted: the first answer token instead of the last prompt token
        return (labels != -100).long().argmax(-1)

    with pytest.raises(ExerciseError, match="(?s)first_french.*Hint"):
        check_answer_start(last_non_pad)


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


def test_progressive_weight_checker():
    check_progressive_weight(progressive_weight)

    with pytest.raises(ExerciseError, match="steps - 1"):
        check_progressive_weight(lambda step, steps: 1 - step / steps)  # planted: never reaches 0
    with pytest.raises(ExerciseError, match="150 of a 100-step"):
        check_progressive_weight(lambda step, steps: 1 - step / max(1, steps - 1))  # planted: goes negative


def test_ewc_penalty_checker():
    check_ewc_penalty(lambda m, a, f, lam: lam / 2 * EWCObjective(a, f, lam).penalty(m))

    def without_half(model, anchor, fisher, lam):  # planted: drops EWC's 1/2
        return lam * sum((fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in model.named_parameters())

    with pytest.raises(ExerciseError, match="lam / 2"):
        check_ewc_penalty(without_half)


def test_a_stub_gets_a_clear_message():
    def stub(step, steps):
        raise NotImplementedError("your code here")

    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_progressive_weight(stub)
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_guided_kl(lambda s, t, T: stub(0, 1))
    assert torch.is_tensor(kd_loss(torch.zeros(1, 2), torch.zeros(1, 2)))
