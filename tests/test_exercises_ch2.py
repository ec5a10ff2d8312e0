"""Chapter 2's checkers reject planted wrong answers: each is a mistake a learner could make.

The reference solutions are the notebook's solution cells; ``test_exercises.py`` checks that
each passes its checker and that each untouched stub fails it on the tiny model, and the tests at
the bottom run every check on the real-model profile (smol) too.
"""

import re

import pytest
import torch

from exercise_solutions import small, smol_world, solution, stub
from ivedu.exercises import ExerciseError
from ivedu.exercises.ch2 import (check_add_to_residual, check_indirect_effect, check_instruction_vector,
                                 check_layer_and_scale, choose_layer_and_scale_reference, vector_from_top_heads)
from ivedu.study import ModelUnderStudy


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


def indirect_effect_of_the_answer_encoded_alone(model, tokenizer, prompts, answers, mean_activations, layer, head):
    """Wrong: takes each answer's first token from encoding " " + answer on its own -- the tiny model's
    word-level tokenizer gives the same token, a real one after a chat template's header does not."""
    from ivedu.generation import last_token_logits
    from ivedu.hooks import edit_head_outputs
    from ivedu.mediation import gold_probs

    golds = torch.tensor([tokenizer.encode(" " + a, add_special_tokens=False)[0] for a in answers])
    before = gold_probs(last_token_logits(model, tokenizer, prompts), golds)

    def patch(x):
        x = x.clone()
        x[:, -1, head] = mean_activations[layer, head]
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


def chosen_on_test(lm, vector, valid, test, layers, scales, site="attention"):
    """Wrong: chooses the layer and scale on the test prompts it reports on."""
    return choose_layer_and_scale_reference(lm, vector, test, test, layers, scales, site)


def reports_the_valid_accuracy(lm, vector, valid, test, layers, scales, site="attention"):
    """Wrong: chooses on valid but reports the valid accuracy instead of the test accuracy."""
    return choose_layer_and_scale_reference(lm, vector, valid, valid, layers, scales, site)


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


def test_the_first_token_of_the_answer_alone_passes_on_the_tiny_model(capsys):
    """Invisible on the tiny model's word-level tokenizer: only the chapter's model can catch it."""
    check_indirect_effect(indirect_effect_of_the_answer_encoded_alone)
    assert "correct" in capsys.readouterr().out


# ---------------------------------------------------------------- on the real-model profile (smol)

@pytest.fixture(scope="module")
def smol_scan(smol):
    """Chapter 2 on the smol profile, cut down: the first general task (6 examples per split), its
    clean and corrupted train prompts and the scan of all 270 heads on them."""
    from ivedu.extraction import clean_prompts, corrupted_prompts, scan_task

    settings, model, tokenizer, fmt, world = smol_world(smol, "ch2")
    task = small(world.task(settings.data.general_tasks[0]), 6)
    corrupted = corrupted_prompts(task, "train", n=6, fmt=fmt)
    scan = scan_task(ModelUnderStudy(model, tokenizer, fmt, "smol"), task, clean_prompts(task, "train", n=6, fmt=fmt),
                     corrupted)
    return settings, model, tokenizer, fmt, task, corrupted, scan


@pytest.fixture(scope="module")
def smol_case(smol_scan):
    """Exercise 2.4's check cell on the smol profile: a vector of the task's top heads, its
    instruction-less valid and test prompts (a few), and a part of the profile's grid."""
    from ivedu.extraction import corrupted_prompts

    settings, model, tokenizer, fmt, task, _, scan = smol_scan
    x = settings.extraction
    return {"lm": ModelUnderStudy(model, tokenizer, fmt, "smol"),
            "vector": vector_from_top_heads(model, scan.mean_activations, scan.effects, x.head_counts[0]),
            "valid": corrupted_prompts(task, "valid", "removed", n=None, fmt=fmt),
            "test": corrupted_prompts(task, "test", "removed", n=None, fmt=fmt),
            "layers": x.layers[:3], "scales": x.scales, "site": x.site}


def test_indirect_effect_check_on_the_real_model(smol_scan, capsys):
    _, model, tokenizer, _, _, corrupted, scan = smol_scan
    where = {"model": model, "tokenizer": tokenizer, "prompts": corrupted.prompts, "answers": corrupted.answers,
             "mean_activations": scan.mean_activations}
    check_indirect_effect(solution("02_instruction_vectors", "head_indirect_effect"), **where)
    checked = int(re.search(r"(\d+) heads match", capsys.readouterr().out).group(1))
    assert checked >= 4, "the chapter's heads were not checked"  # up to 3 on the tiny model, up to 3 on SmolLM2
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_indirect_effect(stub, **where)
    with pytest.raises(ExerciseError, match="(?s)chapter's model.*after its prompt"):
        check_indirect_effect(indirect_effect_of_the_answer_encoded_alone, **where)


def test_instruction_vector_check_on_the_real_model(smol_scan, capsys):
    _, model, _, _, _, _, scan = smol_scan
    where = {"model": model, "mean_activations": scan.mean_activations, "effects": scan.effects}
    check_instruction_vector(solution("02_instruction_vectors", "build_instruction_vector"), **where)
    assert "8 effect maps" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_instruction_vector(stub, **where)
    with pytest.raises(ExerciseError, match="chosen heads only"):
        check_instruction_vector(vector_through_whole_projection, **where)
    # the tiny cases catch it first; the chapter's case would too, by far more than its tolerance
    right = vector_from_top_heads(model, scan.mean_activations, scan.effects, 5)
    wrong = vector_through_whole_projection(model, scan.mean_activations, scan.effects, 5)
    assert (wrong - right).abs().max() > 100 * 1e-4 * right.abs().max()


def test_instruction_vector_check_allows_the_rounding_of_a_16_bit_model(smol_scan, capsys):
    """On bfloat16 weights (the paper profile's dtype) the reference projects in bfloat16 and the
    book's solution in float32: they differ by bfloat16's rounding, which the check allows."""
    import copy

    _, model, _, _, _, _, scan = smol_scan
    half = copy.deepcopy(model).to(torch.bfloat16)
    learner = solution("02_instruction_vectors", "build_instruction_vector")
    right = vector_from_top_heads(half, scan.mean_activations, scan.effects, 5)
    mine = learner(half, scan.mean_activations, scan.effects, 5)
    assert (mine - right).abs().max() > 1e-4 * right.abs().max(), "no rounding to allow: the test shows nothing"
    check_instruction_vector(learner, model=half, mean_activations=scan.mean_activations, effects=scan.effects)
    assert "correct" in capsys.readouterr().out
    def off_by_5_percent_in_16_bit(m, a, e, k):  # far beyond bfloat16's rounding, right on the tiny model
        return learner(m, a, e, k) * (1.05 if m is half else 1.0)

    with pytest.raises(ExerciseError, match="chapter's model and scan"):
        check_instruction_vector(off_by_5_percent_in_16_bit, model=half, mean_activations=scan.mean_activations,
                                 effects=scan.effects)


def test_add_to_residual_check_on_the_real_model(smol_scan, capsys):
    from ivedu.exercises.ch2 import steered_logits_reference

    settings, model, tokenizer, _, _, corrupted, scan = smol_scan
    iv = vector_from_top_heads(model, scan.mean_activations, scan.effects, 4)
    where = {"model": model, "tokenizer": tokenizer, "prompts": corrupted.prompts, "vector": iv,
             "layer": settings.extraction.layers[0], "scale": 2.0}
    check_add_to_residual(solution("02_instruction_vectors", "steered_logits"), **where)
    assert "4 cases" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_add_to_residual(stub, **where)
    with pytest.raises(ExerciseError, match="out_projs"):
        check_add_to_residual(steered_logits_after_the_layer, **where)
    # the tiny cases catch it first; the chapter's case would too, by far more than its tolerance
    args = (model, tokenizer, list(corrupted.prompts), where["layer"], iv, 2.0)
    assert (steered_logits_after_the_layer(*args) - steered_logits_reference(*args)).abs().max() > 100 * 1e-4


def test_layer_and_scale_check_on_the_real_model(smol_case, capsys):
    check_layer_and_scale(solution("02_instruction_vectors", "choose_layer_and_scale"), **smol_case)
    assert "3 grids" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_layer_and_scale(stub, **smol_case)
    with pytest.raises(ExerciseError, match="choose on the valid prompts"):
        check_layer_and_scale(chosen_on_test, **smol_case)
