"""Chapter 2's checkers reject planted wrong answers: each is a mistake a learner could make.

The reference solutions are the notebook's solution cells; ``test_exercises.py`` checks that
each passes its checker and that each untouched stub fails it.
"""

import pytest
import torch

from exercise_solutions import small, smol_world, solution, stub
from ivedu.exercises import ExerciseError
from ivedu.exercises.ch2 import (check_add_to_residual, check_indirect_effect, check_instruction_vector,
                                 check_layer_and_scale, choose_layer_and_scale_reference, vector_from_top_heads)


def indirect_effect_all_positions(model, tokenizer, prompts, answers, mean_activations, layer, head):
    """Wrong: patches the head at every position, not only the last token."""
    from ivedu.generation import last_token_logits
    from ivedu.hooks import edit_head_outputs
    from ivedu.mediation import first_answer_tokens, gold_probs

    golds = first_answer_tokens(tokenizer, prompts, answers)
    before = gold_probs(last_token_logits(model, tokenizer, prompts), golds)

    def patch(x):
        x = x.clone()
        x[:, :, head] = mean_activations[layer, head]
        return x

    with edit_head_outputs(model, {layer: patch}):
        after = gold_probs(last_token_logits(model, tokenizer, prompts), golds)
    return float((after - before).mean())


def vector_with_heads_divided_by_layers(model, mean_activations, effects, k):
    """Wrong: unravels the flat index with the number of layers instead of heads."""
    from ivedu.intervention import instruction_vector

    n_layers = effects.shape[0]
    heads = [(int(i) // n_layers, int(i) % n_layers) for i in effects.flatten().argsort(descending=True)[:k]]
    return instruction_vector(model, mean_activations, heads).vector


def vector_through_whole_projection(model, mean_activations, effects, k):
    """Wrong: projects each chosen head's layer's full mean activation (all heads), not the head alone."""
    from ivedu.architectures import model_layout
    from ivedu.mediation import HeadScan

    n_layers, n_heads = effects.shape
    heads = HeadScan("", effects, torch.zeros(n_layers, n_heads, 1), 0.0, 0.0).top_heads(k)
    layout = model_layout(model)
    with torch.no_grad():
        return sum(layout.out_projs[layer].weight @ mean_activations[layer].flatten() for layer, _ in heads)


def steered_logits_after_the_layer(model, tokenizer, prompts, layer, vector, scale=1.0):
    """Wrong for this chapter: adds the vector after the whole decoder layer (Todd et al.'s site)."""
    from ivedu.generation import last_token_logits
    from ivedu.hooks import add_to_residual

    with add_to_residual(model, layer, vector, positions="last", scale=scale, site="layer"):
        return last_token_logits(model, tokenizer, prompts)


def chosen_on_test(model, tokenizer, vector, valid, test, layers, scales, site="attention"):
    """Wrong: chooses the layer and scale on the test prompts it reports on."""
    return choose_layer_and_scale_reference(model, tokenizer, vector, test, test, layers, scales, site)


def reports_the_valid_accuracy(model, tokenizer, vector, valid, test, layers, scales, site="attention"):
    """Wrong: chooses on valid but reports the valid accuracy instead of the test accuracy."""
    return choose_layer_and_scale_reference(model, tokenizer, vector, valid, valid, layers, scales, site)


def steered_logits_all_positions(model, tokenizer, prompts, layer, vector, scale=1.0):
    """Wrong: adds the vector at every position (padding and instruction tokens included)."""
    from ivedu.generation import last_token_logits
    from ivedu.hooks import add_to_residual

    with add_to_residual(model, layer, vector, positions="all", scale=scale, site="layer"):
        return last_token_logits(model, tokenizer, prompts)


def steered_logits_hook_left_attached(model, tokenizer, prompts, layer, vector, scale=1.0):
    """Wrong: right logits, but the hook stays on the model afterwards."""
    from ivedu.architectures import model_layout
    from ivedu.generation import last_token_logits

    def add(module, args, output):
        hidden = output.clone()
        hidden[:, -1] += scale * vector
        return hidden

    model_layout(model).out_projs[layer].register_forward_hook(add)
    return last_token_logits(model, tokenizer, prompts)


WRONG_ANSWERS = [
    (check_indirect_effect, indirect_effect_all_positions, "last position"),
    (check_instruction_vector, vector_through_whole_projection, "chosen heads only"),
    (check_instruction_vector, vector_with_heads_divided_by_layers, "3 layers x 2 heads"),
    (check_add_to_residual, steered_logits_all_positions, r"\[:, -1\]"),
    (check_add_to_residual, steered_logits_after_the_layer, "out_projs"),
    (check_layer_and_scale, chosen_on_test, "choose on the valid prompts"),
    (check_layer_and_scale, reports_the_valid_accuracy, "the test prompts' accuracy"),
    (check_add_to_residual, steered_logits_hook_left_attached, "left a hook attached"),
]


@pytest.mark.parametrize("check, wrong, message", WRONG_ANSWERS, ids=[w[1].__name__ for w in WRONG_ANSWERS])
def test_checker_rejects_the_planted_wrong_answer(check, wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check(wrong)


def test_a_hook_left_behind_is_removed(tiny):
    from ivedu.architectures import model_layout
    from ivedu.exercises import tiny_model

    model, _ = tiny_model()
    projections = model_layout(model).out_projs
    with pytest.raises(ExerciseError):
        check_add_to_residual(steered_logits_hook_left_attached)
    assert all(not projection._forward_hooks for projection in projections)


# ---------------------------------------------------------------- on the real-model profile (smol)

@pytest.fixture(scope="module")
def smol_case(smol):
    """Exercise 2.4's check cell on the smol profile: a vector of the first general task's top heads,
    its instruction-less valid and test prompts (a few), and a part of the profile's grid."""
    from ivedu.extraction import clean_prompts, corrupted_prompts, scan_task

    settings, model, tokenizer, fmt, world = smol_world(smol, "ch2")
    task = small(world.task(settings.data.general_tasks[0]), 6)
    scan = scan_task(model, tokenizer, task, clean_prompts(task, "train", n=6, fmt=fmt),
                     corrupted_prompts(task, "train", n=6, fmt=fmt))
    x = settings.extraction
    return {"model": model, "tokenizer": tokenizer,
            "vector": vector_from_top_heads(model, scan.mean_activations, scan.effects, x.head_counts[0]),
            "valid": corrupted_prompts(task, "valid", "removed", n=None, fmt=fmt),
            "test": corrupted_prompts(task, "test", "removed", n=None, fmt=fmt),
            "layers": x.layers[:3], "scales": x.scales, "site": x.site}


def test_layer_and_scale_check_on_the_real_model(smol_case, capsys):
    check_layer_and_scale(solution("02_instruction_vectors", "choose_layer_and_scale"), **smol_case)
    assert "3 grids" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_layer_and_scale(stub, **smol_case)
    with pytest.raises(ExerciseError, match="choose on the valid prompts"):
        check_layer_and_scale(chosen_on_test, **smol_case)
