"""Figures drawn from committed results: what they read, and that they draw."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from ivedu.plots import plot_dynamics_result, plot_guided_result, training_curve  # noqa: E402
from ivedu.results import load_result  # noqa: E402


def _seed_run() -> dict:
    """Two general tasks, two stages of 50 and 100 steps, a checkpoint at step 40 of each."""
    def tasks(a, b, **extra):
        return {"t1": {"if_exact_match": a, **extra}, "t2": {"if_exact_match": b, **extra}}

    restored = {"restored_exact_match": 0.5, "restored_random_exact_match": 0.25}
    return {"seed": 0, "r2": {"r2_iv": 0.5, "r2_hidden": 0.4, "r2_params": 0.1, "n_points": 8},
            "stages": [{"stage": 0, "task": None, "tasks": tasks(1.0, 0.8)},
                       {"stage": 1, "task": "a", "steps": 50, "tasks": tasks(0.6, 0.4, **restored)},
                       {"stage": 2, "task": "b", "steps": 100, "tasks": tasks(0.2, 0.0, **restored)}],
            "checkpoints": [{"stage": 1, "step": 40, "tasks": tasks(0.7, 0.5)},
                            {"stage": 2, "step": 40, "tasks": tasks(0.4, 0.2)}]}


def test_the_training_curve_counts_steps_over_the_whole_sequence():
    steps, scores, ends = training_curve(_seed_run())
    assert steps == [0, 40, 50, 90, 150]
    assert scores == pytest.approx([0.9, 0.6, 0.5, 0.3, 0.1])
    assert ends == [50, 150]


def test_the_dynamics_figure_draws_a_committed_result():
    result = load_result("tiny", "dynamics")
    if result is None:
        pytest.skip("results/tiny/dynamics.json is not committed")
    fig = plot_dynamics_result(result)
    left, right = fig.axes
    assert len(left.lines) >= len(result["per_seed"])  # a curve per seed (and the stage-end lines)
    assert len(right.patches) == 3  # a bar per similarity measure
    plt.close(fig)


def test_the_dynamics_figure_refuses_a_result_without_seeds():
    with pytest.raises(ValueError, match="per_seed"):
        plot_dynamics_result({"per_seed": []})


def test_the_guided_figure_draws_a_bar_per_method_and_measure_and_a_dot_per_seed():
    result = load_result("tiny", "guided")
    if result is None:
        pytest.skip("results/tiny/guided.json is not committed")
    ax = plot_guided_result(result)
    assert len(ax.patches) == 3 * len(result["summary"])
    dots = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    runs = [run for run in result["per_seed"] if run["method"] in result["summary"]]  # not the ablation's
    assert dots == 3 * len(runs)  # GP, IP and AP of every (method, seed) run
    plt.close(ax.figure)
