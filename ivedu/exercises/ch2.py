"""Checkers for chapter 2's exercises: from one head's effect to a vector in the residual stream.

- Exercise 2.1, :func:`check_indirect_effect`: one head's average indirect effect by
  activation patching (reference: :func:`ivedu.mediation.indirect_effects`).
- Exercise 2.2, :func:`check_instruction_vector`: the vector of the ``k`` heads with the
  largest effect, their output-projected mean activations summed (references:
  :meth:`ivedu.mediation.HeadScan.top_heads`, :func:`ivedu.intervention.instruction_vector`).
- Exercise 2.3, :func:`check_add_to_residual`: next-token logits with a vector added to the
  residual stream at the attention output of a layer, where the chapter adds it
  (reference: :func:`ivedu.hooks.add_to_residual` with ``site="attention"``).
- Exercise 2.4, :func:`check_layer_and_scale`: the layer and scale chosen on the valid
  prompts, and the test accuracy of that choice (reference: the grid of
  :func:`ivedu.intervention.steered_first_token_accuracy`, as :func:`ivedu.extraction.sweep`
  and :func:`ivedu.dynamics.choose_steering` search it).

The model inputs are the tiny model's, on a few prompts of the ``sentiment`` task, so each
check takes about a second. Every check also runs on the chapter's own model and inputs when
the chapter passes them (any profile): a real model has more layers than heads, other weight
shapes and a byte-level tokenizer after a chat template, where answers that are right on the
tiny model can go wrong.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch

from ivedu.exercises import (Case, ExerciseError, call_learner, check_against_reference, compare, passed,
                             rounding_rtol, tiny_model, tiny_study, tiny_world, without_leftover_hooks)
from ivedu.extraction import clean_prompts, corrupted_prompts
from ivedu.generation import last_token_logits
from ivedu.hooks import add_to_residual
from ivedu.intervention import Steering, instruction_vector, steered_first_token_accuracy
from ivedu.mediation import HeadScan, indirect_effects, mean_head_activations
from ivedu.prompts import TINY_FORMAT

N_PROMPTS = 8  # prompts of each check, on the tiny model and on the chapter's


@lru_cache(maxsize=1)
def _sentiment_effects() -> torch.Tensor:
    """The tiny model's average indirect effects ``[layers, heads]`` on the sentiment prompts."""
    model, tokenizer = tiny_model()
    corrupted, means = _sentiment_inputs()
    return indirect_effects(model, tokenizer, corrupted.prompts, corrupted.answers, means).mean(0)


@lru_cache(maxsize=1)
def _sentiment_inputs():
    """Clean mean activations and corrupted prompts of the sentiment task on the tiny model."""
    model, tokenizer = tiny_model()
    task = tiny_world().task("sentiment")
    clean = clean_prompts(task, "train", "instructed", n=N_PROMPTS, seed=0, fmt=TINY_FORMAT)
    corrupted = corrupted_prompts(task, "train", "removed", n=N_PROMPTS, seed=0, fmt=TINY_FORMAT)
    means = mean_head_activations(model, tokenizer, clean.prompts)
    return corrupted, means


INDIRECT_EFFECT_HINT = (
    "inside `with edit_head_outputs(model, {layer: edit}):` the edit receives the layer's head outputs "
    "[batch, seq, heads, head_dim]; clone them and set only the last position of head `head`: x[:, -1, head] = "
    "mean_activations[layer, head]. Compare P(first answer token) -- gold_probs(last_token_logits(...), "
    "first_answer_tokens(tokenizer, prompts, answers)) -- with and without the patch, and average the difference "
    "over prompts. The first answer token is the first of the answer's tokens *after its prompt* "
    "(first_answer_tokens): after a chat template's header a real tokenizer writes 'Paris', not ' Paris'.")


def _effect_cases(label: str, model, tokenizer, prompts, answers, means, effects: torch.Tensor,
                  others: list[tuple[int, int]]) -> list[Case]:
    """Cases for the head of largest effect in ``effects`` ``[layers, heads]`` and for ``others``."""
    n_layers, n_heads = effects.shape
    top = HeadScan("", effects, torch.zeros(n_layers, n_heads, 1), 0.0, 0.0).top_heads(1)[0]
    return [Case(f"for head {head} on {len(prompts)} {label}",
                 (model, tokenizer, list(prompts), list(answers), means, *head))
            for head in dict.fromkeys([top, *others])]


def _read_from(effects: torch.Tensor) -> Callable:
    """A reference that reads one head's effect from ``effects`` ``[layers, heads]``, computed once for all heads."""
    def reference(model, tokenizer, prompts, answers, mean_activations, layer, head):
        return float(effects[layer, head])

    return reference


def check_indirect_effect(head_indirect_effect: Callable, model=None, tokenizer=None, prompts=(), answers=(),
                          mean_activations=None) -> None:
    """Exercise 2.1: ``head_indirect_effect(model, tokenizer, prompts, answers, mean_activations,
    layer, head) -> float``.

    The mean over the corrupted ``prompts`` of P(first token of the answer) with head ``head``
    of layer ``layer`` replaced *at the last token* by ``mean_activations[layer, head]``, minus
    the same probability unpatched. Checked on the tiny model's sentiment prompts, then -- when
    given -- on the chapter's ``model`` and first ``N_PROMPTS`` corrupted ``prompts``: the head of
    largest effect there (by :func:`ivedu.mediation.indirect_effects`, the reference), the most
    negative one and the last layer's last head, within ``1e-4`` (far above float32 rounding, far
    below the effect of a wrong first token).
    """
    tiny, tiny_tokenizer = tiny_model()
    corrupted, means = _sentiment_inputs()
    effects = _sentiment_effects()
    n = check_against_reference(
        without_leftover_hooks(head_indirect_effect, tiny), _read_from(effects),
        _effect_cases("instruction-less sentiment prompts", tiny, tiny_tokenizer, corrupted.prompts,
                      corrupted.answers, means, effects, [(2, 1), (3, 3)]),
        atol=1e-4, hint=INDIRECT_EFFECT_HINT)
    if model is not None:
        prompts, answers = list(prompts)[:N_PROMPTS], list(answers)[:N_PROMPTS]
        chapter = indirect_effects(model, tokenizer, prompts, answers, mean_activations).mean(0)
        n_layers, n_heads = chapter.shape
        lowest = divmod(int(chapter.flatten().argmin()), n_heads)
        n += check_against_reference(
            without_leftover_hooks(head_indirect_effect, model), _read_from(chapter),
            _effect_cases("of the chapter's corrupted prompts, with the chapter's model", model, tokenizer, prompts,
                          answers, mean_activations, chapter, [lowest, (n_layers - 1, n_heads - 1)]),
            atol=1e-4, hint=INDIRECT_EFFECT_HINT)
    passed("indirect effect of one head", f"{n} heads match ivedu.mediation.indirect_effects")


@lru_cache(maxsize=1)
def _oblong_model():
    """A small random Llama of 3 layers x 2 heads: effect maps that are not square, so layers and
    heads cannot be confused (the tiny model has as many layers as heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


def vector_from_top_heads(model, mean_activations: torch.Tensor, effects: torch.Tensor, k: int) -> torch.Tensor:
    """Exercise 2.2's reference: the instruction vector of the ``k`` heads with the largest effect."""
    n_layers, n_heads = effects.shape
    heads = HeadScan("", effects, torch.zeros(n_layers, n_heads, 1), 0.0, 0.0).top_heads(k)
    return instruction_vector(model, mean_activations, heads).vector


VECTOR_HINT = (
    "rank the heads: effects.flatten().argsort(descending=True)[:k] gives flat indices i, each the head "
    "(i // n_heads, i % n_heads) -- divide by the number of heads (columns), not of layers. For each "
    "(layer, head), W = model_layout(model).out_projs[layer].weight has shape [hidden, n_heads * head_dim]; "
    "the head's columns are W[:, head * head_dim:(head + 1) * head_dim]. Multiply them by "
    "mean_activations[layer, head] and sum over the chosen heads only, each through its own layer's projection.")


def check_instruction_vector(build_instruction_vector: Callable, model=None, mean_activations=None,
                             effects=None) -> None:
    """Exercise 2.2: ``build_instruction_vector(model, mean_activations, effects, k) -> Tensor[hidden]``:
    the ``k`` heads with the largest effect in ``effects`` ``[layers, heads]``, each head's mean
    activation pushed through its layer's output projection ``W_O`` (its ``head_dim`` columns of
    the weight), summed.

    Checked on the tiny model and on a random model with more layers than heads, then -- when
    given -- on the chapter's ``model`` with its scan's ``mean_activations`` and ``effects`` for
    one head and five: to ``1e-4`` relative on a float32 model, to two roundings of the weights'
    dtype on a 16-bit one (:func:`ivedu.exercises.rounding_rtol`), where the reference
    multiplies in the model's dtype and a learner may well cast to float32 first."""
    tiny, _ = tiny_model()
    _, means = _sentiment_inputs()
    sentiment_effects = _sentiment_effects()
    oblong = _oblong_model()
    generator = torch.Generator().manual_seed(0)
    oblong_means = torch.randn(3, 2, 8, generator=generator)
    oblong_effects = torch.randn(3, 2, generator=generator)
    cases = [Case(f"with the sentiment task's effects and k = {k}", (tiny, means, sentiment_effects, k))
             for k in (1, 2, 4)]
    cases.append(Case("with random effects and k = 3",
                      (tiny, means, torch.randn(sentiment_effects.shape, generator=generator), 3)))
    cases += [Case(f"in a random model of 3 layers x 2 heads (effects not square), k = {k}",
                   (oblong, oblong_means, oblong_effects, k)) for k in (2, 4)]
    n = check_against_reference(build_instruction_vector, vector_from_top_heads, cases, hint=VECTOR_HINT)
    if model is not None:
        rtol = rounding_rtol(model)
        for k in (1, 5):
            expected = vector_from_top_heads(model, mean_activations, effects, k)
            n += check_against_reference(
                build_instruction_vector, vector_from_top_heads,
                [Case(f"with the chapter's model and scan, k = {k}", (model, mean_activations, effects, k))],
                hint=VECTOR_HINT, rtol=rtol, atol=rtol * float(expected.abs().max()))
    passed("instruction vector", f"{n} effect maps match ivedu.intervention.instruction_vector of the top heads")


def steered_logits_reference(model, tokenizer, prompts, layer, vector, scale):
    """Exercise 2.3's reference: last-token logits ``[n, vocab]`` with ``scale * vector`` added at
    the attention output of ``layer``, at the last prompt token."""
    with add_to_residual(model, layer, vector, positions="last", scale=scale, site="attention"):
        return last_token_logits(model, tokenizer, prompts)


STEERED_HINT = ("register a forward hook on model_layout(model).out_projs[layer] -- the attention output projection, "
                "where the chapter adds the vector (site='attention'), not the whole decoder layer -- that returns its "
                "output with scale * vector added at [:, -1]; clone before adding; compute last_token_logits inside "
                "try/finally and remove the hook in finally.")


def check_add_to_residual(steered_logits: Callable, model=None, tokenizer=None, prompts=(), vector=None,
                          layer: int = 0, scale: float = 1.0) -> None:
    """Exercise 2.3: ``steered_logits(model, tokenizer, prompts, layer, vector, scale) -> Tensor[n, vocab]``.

    Next-token logits with ``scale * vector`` added where the chapter adds it
    (``settings.extraction.site``, ``"attention"``): at the output of decoder layer ``layer``'s
    attention output projection, before its MLP, at each prompt's last token only (prompts are
    left-padded: position ``-1``). The hook must be removed afterwards
    (:func:`ivedu.exercises.without_leftover_hooks` checks it). Checked with random vectors on the
    tiny model, then -- when given -- with the chapter's ``model``, ``vector``, ``layer`` and
    ``scale`` on its first ``N_PROMPTS`` ``prompts``, to ``1e-4``: the learner's hook and the
    reference's add the same numbers in the same forward pass.
    """
    tiny, tiny_tokenizer = tiny_model()
    corrupted, _ = _sentiment_inputs()
    hidden = tiny.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    cases = [Case(f"adding a random vector of norm {norm} in layer {layer_} with scale {scale_}",
                  (tiny, tiny_tokenizer, list(corrupted.prompts), layer_,
                   torch.randn(hidden, generator=generator) * norm / hidden ** 0.5, scale_))
             for layer_, norm, scale_ in ((0, 4.0, 1.0), (2, 8.0, 1.5), (3, 8.0, 0.5))]
    n = check_against_reference(without_leftover_hooks(steered_logits, tiny), steered_logits_reference, cases,
                                atol=1e-4, hint=STEERED_HINT)
    if model is not None:
        n += check_against_reference(
            without_leftover_hooks(steered_logits, model), steered_logits_reference,
            [Case(f"adding the chapter's vector in layer {layer} with scale {scale}, with the chapter's model",
                  (model, tokenizer, list(prompts)[:N_PROMPTS], layer, vector, scale))],
            atol=1e-4, hint=STEERED_HINT)
    passed("adding a vector to the residual stream", f"{n} cases match ivedu.hooks.add_to_residual at the attention "
                                                     "output")


def _valid_accuracies(lm, vector, valid, layers, scales, site) -> dict[tuple[int, float], float]:
    return {(layer, scale): steered_first_token_accuracy(lm, valid.prompts, valid.answers, vector,
                                                         Steering(layer, scale, site))
            for layer in layers for scale in scales}


def choose_layer_and_scale_reference(lm, vector, valid, test, layers, scales, site="attention"):
    """Exercise 2.4's reference: the first (layer, scale) of the grid with the best valid
    first-token accuracy, and the test accuracy there: ``(layer, scale, test_accuracy)``."""
    grid = _valid_accuracies(lm, vector, valid, layers, scales, site)
    layer, scale = max(grid, key=grid.get)  # the first maximum: fewest layers, smallest scale
    return layer, scale, steered_first_token_accuracy(lm, test.prompts, test.answers, vector,
                                                      Steering(layer, scale, site))


LAYER_SCALE_HINT = ("try every layer in `layers` and every scale in `scales`; for each, "
                    "steered_first_token_accuracy(lm, valid.prompts, valid.answers, vector, "
                    "Steering(layer, scale, site)) on the VALID prompts. Keep the best (any of the tied best is fine), then report "
                    "steered_first_token_accuracy on the TEST prompts at that one setting: (layer, scale, test "
                    "accuracy). The test prompts never take part in the choice.")


def _check_layer_and_scale_case(choose: Callable, label: str, lm, vector, valid, test, layers, scales,
                                site: str) -> None:
    got = call_learner(choose, lm, vector, valid, test, tuple(layers), tuple(scales), site, label=label)
    name = getattr(choose, "__name__", "your function")
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise ExerciseError(f"`{name}` {label} returned {got!r}; return a tuple (layer, scale, test_accuracy).")
    layer, scale, accuracy = got
    grid = _valid_accuracies(lm, vector, valid, layers, scales, site)
    setting = (int(layer), float(scale)) if isinstance(layer, (int, float)) and isinstance(scale, (int, float)) else None
    if setting not in grid:
        raise ExerciseError(f"`{name}` {label} chose layer {layer!r} and scale {scale!r}, which are not in the grid "
                            f"(layers {list(layers)}, scales {list(scales)}).\nHint: {LAYER_SCALE_HINT}")
    best = max(grid, key=grid.get)
    if grid[setting] < grid[best] - 1e-9:
        raise ExerciseError(
            f"`{name}` {label} chose layer {setting[0]}, scale {setting[1]}, whose valid first-token accuracy is "
            f"{grid[setting]:.3f}, but layer {best[0]}, scale {best[1]} reaches {grid[best]:.3f} on the valid "
            f"prompts: choose on the valid prompts (choosing on the test prompts reports an optimistic score).\n"
            f"Hint: {LAYER_SCALE_HINT}")
    expected = steered_first_token_accuracy(lm, test.prompts, test.answers, vector, Steering(*setting, site))
    try:
        compare(accuracy, expected, "the reported accuracy", atol=1e-6)
    except ExerciseError as err:
        raise ExerciseError(f"`{name}` {label}, at layer {setting[0]} and scale {setting[1]}: {err} -- the test "
                            f"prompts' accuracy there (the valid prompts' is {grid[setting]:.6g}).\n"
                            f"Hint: {LAYER_SCALE_HINT}") from None


def check_layer_and_scale(choose_layer_and_scale: Callable, lm=None, vector=None, valid=None, test=None, layers=None,
                          scales=None, site: str = "attention") -> None:
    """Exercise 2.4: ``choose_layer_and_scale(lm, vector, valid, test, layers, scales, site) ->
    (layer, scale, test_accuracy)``, ``lm`` a model under study (:class:`ivedu.study.ModelUnderStudy`).

    ``valid``/``test``: :class:`ivedu.extraction.PromptSet` of prompts without the instruction.
    The chosen setting must reach the best first-token accuracy on ``valid`` (any of the tied best),
    and the accuracy reported must be ``test``'s at that setting. Checked on the tiny model's
    sentiment and antonym vectors, then on the chapter's own model under study ``lm``, ``vector``
    and grid when given (any profile: first-token accuracy of the same function is deterministic).
    """
    tiny = tiny_study()
    world = tiny_world()
    effects, (_, means) = _sentiment_effects(), _sentiment_inputs()
    sentiment = world.task("sentiment")
    sentiment_vector = vector_from_top_heads(tiny.model, means, effects, 2)
    n = 0
    for scale_grid in ((0.5, 1.0, 2.0, 4.0), (1.0, 3.0, 8.0)):
        _check_layer_and_scale_case(
            choose_layer_and_scale, f"with the tiny model's sentiment vector, layers 0-3, scales {scale_grid}",
            tiny, sentiment_vector,
            corrupted_prompts(sentiment, "valid", "removed", n=None, fmt=TINY_FORMAT),
            corrupted_prompts(sentiment, "test", "removed", n=None, fmt=TINY_FORMAT), (0, 1, 2, 3), scale_grid,
            "attention")
        n += 1
    if lm is not None:
        _check_layer_and_scale_case(choose_layer_and_scale, "with the chapter's model, vector and grid", lm, vector,
                                    valid, test, layers, scales, site)
        n += 1
    passed("layer and scale chosen on valid", f"{n} grids: the best valid setting and its test accuracy")
