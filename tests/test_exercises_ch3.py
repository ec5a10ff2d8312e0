"""Chapter 3's checkers pass on the reference solutions and fail on planted wrong answers, on the
tiny model and, for the restoration and the projection, on the real-model profile (smol)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from exercise_solutions import small, smol_world, solution, stub
from ivedu.dynamics import projections
from ivedu.exercises import ExerciseError
from ivedu.exercises.ch3 import (check_projection, check_restoration, check_restored_share, check_similarity_r2,
                                 restoration_reference, restored_shares_reference, similarity_r2_reference)
from ivedu.intervention import Steering, steered_exact_match
from ivedu.study import ModelUnderStudy


def restoration_with_an_unscaled_random_vector(lm, prompts, answers, vector, steering, seed=0):
    """Wrong: the control is a random vector of norm about sqrt(hidden), not of the vector's norm."""
    result = restoration_reference(lm, prompts, answers, vector, steering, seed)
    noise = torch.randn(vector.shape, generator=torch.Generator().manual_seed(seed)) * 10
    result["random"] = steered_exact_match(lm, prompts, answers, noise, steering)
    return result


def restoration_after_the_whole_layer(lm, prompts, answers, vector, steering, seed=0):
    """Wrong: adds the vectors after the whole decoder layer, not at the chapter's site."""
    return restoration_reference(lm, prompts, answers, vector, replace(steering, site="layer"), seed)


def mean_of_per_task_shares(original, finetuned, restored, random):
    """Wrong: averages each task's share, skipping the tasks that lost nothing."""
    lost = [name for name in original if original[name] > finetuned[name]]
    if not lost:
        return math.nan, math.nan
    share = np.mean([(restored[n] - finetuned[n]) / (original[n] - finetuned[n]) for n in lost])
    random_share = np.mean([(random[n] - finetuned[n]) / (original[n] - finetuned[n]) for n in lost])
    return float(share), float(random_share)


def test_restoration_checker_on_the_tiny_model(capsys):
    check_restoration(restoration_reference)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_restoration(stub)
    with pytest.raises(ExerciseError, match=r"(?s)\['vector'\]|\['random'\]|\['bare'\]"):
        check_restoration(restoration_after_the_whole_layer)


def test_restored_share_checker():
    check_restored_share(restored_shares_reference)
    check_restored_share(solution("03_dynamics", "restored_shares"))
    with pytest.raises(ExerciseError, match="(?s)lost nothing.*Hint: average each dict"):
        check_restored_share(mean_of_per_task_shares)
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_restored_share(stub)


def test_similarity_r2_checker():
    check_similarity_r2(similarity_r2_reference)

    def correlation(points, measure):  # planted: r instead of r², negative on a falling line
        return float(np.corrcoef([getattr(p, measure) for p in points], [p.if_exact_match for p in points])[0, 1])

    with pytest.raises(ExerciseError, match="falling"):
        check_similarity_r2(correlation)

    def without_intercept(points, measure):  # planted: a line through the origin
        x = np.array([getattr(p, measure) for p in points])
        y = np.array([p.if_exact_match for p in points])
        if np.ptp(y) == 0:
            return 0.0
        slope = (x @ y) / (x @ x)
        return float(1 - ((y - slope * x) ** 2).sum() / ((y - y.mean()) ** 2).sum())

    with pytest.raises(ExerciseError, match="R²|least squares"):
        check_similarity_r2(without_intercept)


def projection_unnormalised(states, directions):
    """Wrong: forgets to make the directions unit length."""
    return (states * directions.float()).sum(-1).mean(-1)


def projection_by_matmul(states, directions):
    """Right, summed in another order: each state times its unit direction as a matrix product."""
    units = directions.float() / directions.float().norm(dim=-1, keepdim=True)
    if units.dim() == 1:
        return (states @ units).mean(-1)
    return torch.einsum("lnh,nh->ln", states, units).mean(-1)


def test_projection_checker():
    check_projection(projections)
    check_projection(projection_by_matmul)
    with pytest.raises(ExerciseError, match="norm 7"):
        check_projection(projection_unnormalised)


# ---------------------------------------------------------------- on the real-model profile (smol)

@pytest.fixture(scope="module")
def smol_case(smol):
    """Exercise 3.1's check cell on the smol profile, with the model itself as the "fine-tuned" one (a
    fine-tuning would take minutes) and a vector of the first general task's top heads."""
    from ivedu.dynamics import instructed_set
    from ivedu.extraction import clean_prompts, corrupted_prompts, scan_task
    from ivedu.intervention import instruction_vector

    settings, model, tokenizer, fmt, world = smol_world(smol, "ch3")
    lm = ModelUnderStudy(model, tokenizer, fmt, "smol")
    task = small(world.task(settings.data.general_tasks[0]), 4)
    scan = scan_task(lm, task, clean_prompts(task, "train", n=4, fmt=fmt),
                     corrupted_prompts(task, "train", n=4, fmt=fmt))
    iv = instruction_vector(model, scan.mean_activations, scan.top_heads(settings.dynamics.heads))
    test = instructed_set(task, "test", fmt=fmt)
    return {"lm": lm, "prompts": test.prompts, "answers": test.answers, "vector": iv.vector * 4,
            "steering": Steering(settings.dynamics.layers[0], 2.0, settings.dynamics.site)}


def test_restoration_check_on_the_real_model(smol_case, capsys):
    check_restoration(solution("03_dynamics", "restore_with_control"), **smol_case)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_restoration(stub, **smol_case)
    with pytest.raises(ExerciseError):
        check_restoration(restoration_after_the_whole_layer, **smol_case)


def test_projection_check_on_the_real_model(smol_case, capsys):
    """Exercise 3.4's check cell on the smol profile: SmolLM2's residual states at the test prompts,
    each prompt with its own direction (the task's vector, or a random one of its norm)."""
    from ivedu.dynamics import residual_states
    from ivedu.intervention import random_vector_like

    prompts, vector = list(smol_case["prompts"]), smol_case["vector"]
    states = residual_states(smol_case["lm"].model, smol_case["lm"].tokenizer, prompts)
    directions = torch.stack([vector if i % 2 == 0 else random_vector_like(vector, i) for i in range(len(prompts))])
    check_projection(solution("03_dynamics", "mean_projection"), states=states, directions=directions)
    check_projection(projection_by_matmul, states=states, directions=directions)  # the tolerance holds
    assert capsys.readouterr().out.count("5 cases") == 2
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_projection(stub, states=states, directions=directions)
    with pytest.raises(ExerciseError, match="norm 7"):
        check_projection(projection_unnormalised, states=states, directions=directions)
    # the random cases catch it first; the chapter's would too, by far more than its tolerance
    gap = (projection_unnormalised(states, directions) - projections(states, directions)).abs().max()
    assert gap > 100 * 1e-5 * float(states.norm(dim=-1).max())
