"""Checkers for chapter 2's exercises: from one head's effect to a vector in the residual stream.

- Exercise 2.1, :func:`check_indirect_effect`: one head's average indirect effect by
  activation patching (reference: :func:`ivedu.mediation.indirect_effects`).
- Exercise 2.2, :func:`check_top_heads`: the ``k`` heads with the largest effect
  (reference: :meth:`ivedu.mediation.HeadScan.top_heads`).
- Exercise 2.3, :func:`check_instruction_vector`: the sum of chosen heads' output-projected
  mean activations (reference: :func:`ivedu.intervention.instruction_vector`).
- Exercise 2.4, :func:`check_add_to_residual`: next-token logits with a vector added to the
  residual stream after a decoder layer (reference: :func:`ivedu.hooks.add_to_residual`).

The model inputs are the tiny model's, on a few prompts of the ``sentiment`` task, so each
check takes about a second.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch

from ivedu.exercises import (Case, check_against_reference, passed, tiny_model, tiny_world,
                             without_leftover_hooks)
from ivedu.extraction import clean_prompts, corrupted_prompts
from ivedu.generation import last_token_logits
from ivedu.hooks import add_to_residual
from ivedu.intervention import instruction_vector
from ivedu.mediation import HeadScan, indirect_effects, mean_head_activations
from ivedu.prompts import TINY_FORMAT

N_PROMPTS = 8


@lru_cache(maxsize=1)
def _sentiment_inputs():
    """Clean mean activations and corrupted prompts of the sentiment task on the tiny model."""
    model, tokenizer = tiny_model()
    task = tiny_world().task("sentiment")
    clean = clean_prompts(task, "train", "instructed", n=N_PROMPTS, seed=0, fmt=TINY_FORMAT)
    corrupted = corrupted_prompts(task, "train", "removed", n=N_PROMPTS, seed=0, fmt=TINY_FORMAT)
    means = mean_head_activations(model, tokenizer, clean.prompts)
    return corrupted, means


def check_indirect_effect(head_indirect_effect: Callable) -> None:
    """Exercise 2.1: ``head_indirect_effect(model, tokenizer, prompts, answers, mean_activations,
    layer, head) -> float``.

    The mean over the corrupted ``prompts`` of P(first token of the answer) with head ``head``
    of layer ``layer`` replaced *at the last token* by ``mean_activations[layer, head]``, minus
    the same probability unpatched.
    """
    model, tokenizer = tiny_model()
    corrupted, means = _sentiment_inputs()
    effects = indirect_effects(model, tokenizer, corrupted.prompts, corrupted.answers, means).mean(0)
    top = HeadScan("sentiment", effects, means, 0.0, 0.0).top_heads(1)[0]
    heads = [top, (2, 1), (3, 3)]
    cases = [Case(f"for head {head} on {N_PROMPTS} instruction-less sentiment prompts",
                  (model, tokenizer, list(corrupted.prompts), list(corrupted.answers), means, *head))
             for head in heads]

    def reference(model, tokenizer, prompts, answers, mean_activations, layer, head):
        return float(effects[layer, head])

    n = check_against_reference(
        without_leftover_hooks(head_indirect_effect, model), reference, cases, atol=1e-4,
        hint="inside `with edit_head_outputs(model, {layer: edit}):` the edit receives the layer's head "
             "outputs [batch, seq, heads, head_dim]; clone them and set only the last position of head "
             "`head`: x[:, -1, head] = mean_activations[layer, head]. Compare P(first answer token) -- "
             "gold_probs(last_token_logits(...), first_answer_tokens(tokenizer, prompts, answers)) -- with and "
             "without the patch, and average the difference over prompts.")
    passed("indirect effect of one head", f"{n} heads match ivedu.mediation.indirect_effects")


def _effect_cases() -> list[Case]:
    """Effect maps of several shapes (not square: layers and heads must not be confused)."""
    generator = torch.Generator().manual_seed(0)
    cases = []
    for shape, k in (((4, 4), 1), ((4, 4), 3), ((3, 5), 4), ((6, 2), 5)):
        effects = torch.randn(shape, generator=generator)
        cases.append(Case(f"on a random {shape[0]} layers x {shape[1]} heads effect map with k = {k}",
                          (effects, k)))
    return cases


def check_top_heads(top_heads: Callable) -> None:
    """Exercise 2.2: ``top_heads(effects, k) -> list[(layer, head)]``, the ``k`` heads with the
    largest effect in ``effects`` ``[layers, heads]``, largest first."""
    def reference(effects, k):
        n_layers, n_heads = effects.shape
        return HeadScan("", effects, torch.zeros(n_layers, n_heads, 1), 0.0, 0.0).top_heads(k)

    n = check_against_reference(
        top_heads, reference, _effect_cases(),
        hint="sort the flattened effects in descending order (effects.flatten().argsort(descending=True)) "
             "and turn each flat index i back into (i // n_heads, i % n_heads) -- divide by the number "
             "of heads (columns), not of layers. Return plain ints, largest effect first.")
    passed("top-k heads", f"{n} effect maps match HeadScan.top_heads")


def check_instruction_vector(build_instruction_vector: Callable) -> None:
    """Exercise 2.3: ``build_instruction_vector(model, mean_activations, heads) -> Tensor[hidden]``:
    the sum over ``heads`` of each head's mean activation pushed through its layer's output
    projection ``W_O`` (its ``head_dim`` columns of the weight)."""
    model, _ = tiny_model()
    _, means = _sentiment_inputs()
    head_sets = [[(0, 1)], [(0, 1), (0, 3)], [(0, 2), (1, 0), (3, 3)]]
    cases = [Case(f"for heads {heads}", (model, means, heads)) for heads in head_sets]

    def reference(model, mean_activations, heads):
        return instruction_vector(model, mean_activations, heads).vector

    n = check_against_reference(
        build_instruction_vector, reference, cases,
        hint="for each (layer, head), W = model_layout(model).out_projs[layer].weight has shape "
             "[hidden, n_heads * head_dim]; the head's columns are W[:, head * head_dim:(head + 1) * "
             "head_dim]. Multiply them by mean_activations[layer, head] and sum over the heads -- only "
             "the chosen heads, each through its own layer's projection.")
    passed("instruction vector", f"{n} head sets match ivedu.intervention.instruction_vector")


def check_add_to_residual(steered_logits: Callable) -> None:
    """Exercise 2.4: ``steered_logits(model, tokenizer, prompts, layer, vector, scale) -> Tensor[n, vocab]``.

    Next-token logits with ``scale * vector`` added to the output of decoder layer ``layer``
    at each prompt's last token only (prompts are left-padded: position ``-1``). The hook must
    be removed afterwards (:func:`ivedu.exercises.without_leftover_hooks` checks it).
    """
    model, tokenizer = tiny_model()
    corrupted, _ = _sentiment_inputs()
    prompts = list(corrupted.prompts)
    hidden = model.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    cases = [Case(f"adding a random vector of norm {norm} after layer {layer} with scale {scale}",
                  (model, tokenizer, prompts, layer, torch.randn(hidden, generator=generator) * norm / hidden ** 0.5,
                   scale))
             for layer, norm, scale in ((0, 4.0, 1.0), (2, 8.0, 1.5), (3, 8.0, 0.5))]

    def reference(model, tokenizer, prompts, layer, vector, scale):
        with add_to_residual(model, layer, vector, positions="last", scale=scale, site="layer"):
            return last_token_logits(model, tokenizer, prompts)

    n = check_against_reference(
        without_leftover_hooks(steered_logits, model), reference, cases, atol=1e-4,
        hint="register a forward hook on model_layout(model).layers[layer] that returns the layer's "
             "output with scale * vector added at [:, -1] (in transformers 5 a decoder layer returns a "
             "tensor, in transformers 4 a tuple whose element 0 is the hidden states: handle both); clone "
             "before adding; compute last_token_logits inside try/finally and remove the hook in finally.")
    passed("adding a vector to the residual stream", f"{n} cases match ivedu.hooks.add_to_residual")
