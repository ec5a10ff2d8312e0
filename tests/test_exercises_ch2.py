"""Chapter 2's checkers reject planted wrong answers: each is a mistake a learner could make.

The reference solutions are the notebook's solution cells; ``test_exercises.py`` checks that
each passes its checker and that each untouched stub fails it.
"""

import pytest
import torch

from ivedu.exercises import ExerciseError
from ivedu.exercises.ch2 import check_add_to_residual, check_indirect_effect, check_instruction_vector, check_top_heads


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


def top_heads_divided_by_layers(effects, k):
    """Wrong: unravels the flat index with the number of layers instead of heads."""
    n_layers = effects.shape[0]
    return [(int(i) // n_layers, int(i) % n_layers) for i in effects.flatten().argsort(descending=True)[:k]]


def vector_through_whole_projection(model, mean_activations, heads):
    """Wrong: projects each head's layer's full mean activation (all heads), not the head alone."""
    from ivedu.architectures import model_layout

    layout = model_layout(model)
    with torch.no_grad():
        return sum(layout.out_projs[layer].weight @ mean_activations[layer].flatten() for layer, _ in heads)


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

    model_layout(model).layers[layer].register_forward_hook(add)
    return last_token_logits(model, tokenizer, prompts)


WRONG_ANSWERS = [
    (check_indirect_effect, indirect_effect_all_positions, "last position"),
    (check_top_heads, top_heads_divided_by_layers, "not of layers"),
    (check_instruction_vector, vector_through_whole_projection, "only\nthe chosen heads|only the chosen"),
    (check_add_to_residual, steered_logits_all_positions, r"\[:, -1\]"),
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
    layers = model_layout(model).layers
    with pytest.raises(ExerciseError):
        check_add_to_residual(steered_logits_hook_left_attached)
    assert all(not layer._forward_hooks for layer in layers)
