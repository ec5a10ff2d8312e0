"""Continual-learning metrics on hand-made R matrices whose answers are worked out by hand."""

import numpy as np
import pytest

from ivedu.metrics import (average_performance, backward_transfer, continual_metrics, final_performance,
                           forgetting, forward_transfer, overall_performance)

# R[t, i]: score on task i after training tasks 0..t.
R = np.array([[0.9, 0.1, 0.0],
              [0.6, 0.8, 0.2],
              [0.3, 0.5, 1.0]])


def test_performance_means_on_a_worked_example():
    assert overall_performance(R) == pytest.approx((0.3 + 0.5 + 1.0) / 3)
    assert final_performance(R) == pytest.approx(0.6)
    assert average_performance(R) == pytest.approx((0.9 + 0.8 + 1.0) / 3)
    assert overall_performance(R, stage=1) == pytest.approx((0.6 + 0.8) / 2)
    assert overall_performance(R, stage=0) == pytest.approx(0.9)


def test_bwt_in_both_conventions_on_a_worked_example():
    # GEM (Lopez-Paz & Ranzato 2017): mean over the T-1 tasks that can be forgotten.
    assert backward_transfer(R, "gem") == pytest.approx(((0.3 - 0.9) + (0.5 - 0.8)) / 2)
    # TRACE (Wang et al. 2023): the same sum over all T tasks, the last contributing 0.
    assert backward_transfer(R, "trace") == pytest.approx(((0.3 - 0.9) + (0.5 - 0.8)) / 3)
    assert backward_transfer(R, "gem", stage=1) == pytest.approx(0.6 - 0.9)
    assert backward_transfer(R, "trace", stage=1) == pytest.approx((0.6 - 0.9) / 2)


def test_trace_bwt_is_final_minus_average_performance_and_scaled_gem():
    rng = np.random.default_rng(0)
    for T in (2, 3, 5):
        M = rng.random((T, T))
        assert backward_transfer(M, "trace") == pytest.approx(final_performance(M) - average_performance(M))
        assert backward_transfer(M, "trace") == pytest.approx(backward_transfer(M, "gem") * (T - 1) / T)


def test_forgetting_uses_the_best_earlier_score_unlike_bwt():
    # Task 0 improves after task 1 is trained (0.5 -> 0.9), then drops to 0.6.
    M = np.array([[0.5, 0.0, 0.0],
                  [0.9, 0.8, 0.0],
                  [0.6, 0.8, 1.0]])
    assert backward_transfer(M, "gem") == pytest.approx(((0.6 - 0.5) + 0.0) / 2)  # positive: "no forgetting"
    assert forgetting(M) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.8)) / 2)       # but 0.3 was lost on task 0
    assert forgetting(R) == pytest.approx(((0.9 - 0.3) + (0.8 - 0.5)) / 2)


def test_no_forgetting_and_one_task_give_zero():
    kept = np.tril(np.ones((4, 4)))  # each task learnt at its stage and kept at 1.0
    assert backward_transfer(kept, "gem") == backward_transfer(kept, "trace") == 0.0
    assert forgetting(kept) == 0.0
    assert backward_transfer(np.eye(4), "gem") == -1.0  # each task lost at the next stage
    assert backward_transfer([[0.7]], "gem") == backward_transfer([[0.7]], "trace") == 0.0
    assert forgetting([[0.7]]) == 0.0
    assert forward_transfer([[0.7]], [0.1]) == 0.0


def test_forward_transfer_reads_the_entry_above_the_diagonal():
    assert forward_transfer(R, baseline=[0.0, 0.2, 0.1]) == pytest.approx(((0.1 - 0.2) + (0.2 - 0.1)) / 2)


def test_continual_metrics_collects_everything():
    out = continual_metrics(R, baseline=[0.0, 0.0, 0.0])
    assert set(out) == {"OP", "AP", "FP", "BWT_gem", "BWT_trace", "forgetting", "FWT"}
    assert out["BWT_gem"] == pytest.approx(-0.45) and out["BWT_trace"] == pytest.approx(-0.3)
    assert "FWT" not in continual_metrics(R)


def test_bad_inputs_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="square"):
        backward_transfer(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="convention"):
        backward_transfer(R, "lopez")
    with pytest.raises(ValueError, match="baseline"):
        forward_transfer(R, [0.0, 0.0])
