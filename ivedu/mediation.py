"""Causal mediation over attention heads: which heads carry a task to the answer?

Todd et al.'s recipe (the instruction-vector paper follows it with the instruction in the
role of the demonstrations):

1. run *clean* prompts, where the model does the task, and average each head's output at
   the last prompt token: ``mean_head_activations`` -> ``[layers, heads, head_dim]``;
2. run *corrupted* prompts, where the task is missing (instruction removed, or few-shot
   labels shuffled), and for every head in turn replace its last-token output by the clean
   mean; the **indirect effect** of the head is the gain in the probability of the correct
   first answer token. Averaged over prompts it is the head's **AIE**.

The scan is the costly step on a real model: ``layers x heads x prompts`` patched forward
passes. :func:`indirect_effects` batches the patched heads and, because patching the last
position cannot change any earlier position, computes the prompt prefix once and reuses
its keys and values for every patch, recomputing only the last position.
:func:`indirect_effects_reference` is the straightforward loop of the reference code, kept
for tests and the benchmark.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ivedu.architectures import model_layout
from ivedu.arguments import check_int, check_positive_int, check_prompts, check_sequence, check_tensor
from ivedu.checks import warn_if_ambiguous_first_token
from ivedu.generation import batches, check_fits, encode_batch, last_column, model_device, prefix_cache, prompt_ids
from ivedu.hooks import edit_head_outputs, record_head_outputs
from ivedu.prompts import answer_ids

Head = tuple[int, int]  # (layer, head)


@dataclass(frozen=True)
class HeadScan:
    """The result of a causal-mediation scan for one task.

    ``effects``: ``[layers, heads]`` average indirect effect on P(correct first answer token).
    ``mean_activations``: ``[layers, heads, head_dim]`` clean last-token head outputs.
    ``corrupted_prob`` / ``clean_prob``: mean P(correct first token) on the two prompt sets.
    """

    task: str
    effects: torch.Tensor
    mean_activations: torch.Tensor
    corrupted_prob: float
    clean_prob: float

    def top_heads(self, k: int) -> list[Head]:
        """The ``k`` heads with the largest average indirect effect, largest first."""
        n_layers, n_heads = self.effects.shape
        check_int("k", k)
        if not 1 <= k <= n_layers * n_heads:
            raise ValueError(f"k must be between 1 and {n_layers * n_heads} (layers x heads), got {k}")
        order = self.effects.flatten().argsort(descending=True)[:k]
        return [(int(i) // n_heads, int(i) % n_heads) for i in order]


def first_answer_tokens(tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
    """The first token id of each answer as it follows its own prompt: ``[n]``.

    The prompt is needed because the first token depends on it: ``Ġparis`` after ``A:`` but
    ``paris`` after a chat template's ``assistant\\n`` (:func:`ivedu.prompts.answer_ids`).
    Every first-token metric goes through here, so this is where distinct answers that share
    a first token are flagged (:class:`ivedu.checks.AmbiguousFirstTokenWarning`, once per call).
    """
    check_sequence("answers", answers)
    if not answers:
        raise ValueError("no answers given: a task needs at least one example")
    check_prompts(prompts, answers)
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers: give one answer per prompt")
    ids = [answer_ids(tokenizer, p, a) for p, a in zip(prompts, answers)]
    empty = [a for a, x in zip(answers, ids) if not x]
    if empty:
        raise ValueError(f"answer {empty[0]!r} encodes to no token: every answer needs at least one token")
    firsts = [x[0] for x in ids]
    warn_if_ambiguous_first_token(tokenizer, answers, firsts, stacklevel=3)  # name our caller
    return torch.tensor(firsts)


@torch.no_grad()
def mean_head_activations(model, tokenizer, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Every head's output at the last prompt token, averaged over ``prompts``.

    Returns ``[layers, heads, head_dim]`` (float32, on the model's device): the input of each
    layer's attention output projection, split per head.
    """
    check_sequence("prompts", prompts)
    if not prompts:
        raise ValueError("no prompts given: mean activations need at least one clean prompt")
    check_prompts(prompts)
    check_positive_int("batch_size", batch_size)
    layout = model_layout(model)
    ids = prompt_ids(tokenizer, prompts)
    check_fits(model, ids)
    total = None
    with record_head_outputs(model, last_token_only=True) as acts:
        for sl in batches(len(ids), batch_size):
            model(**encode_batch(tokenizer, ids[sl], model_device(model)))
            batch_sum = torch.stack([acts[layer][:, -1].float().sum(0) for layer in range(layout.n_layers)])
            total = batch_sum if total is None else total + batch_sum
    return total / len(ids)


def gold_probs(logits: torch.Tensor, golds: torch.Tensor) -> torch.Tensor:
    """P(gold token) under each row of ``logits`` ``[n, vocab]``: ``[n]``."""
    return logits.float().softmax(-1).gather(-1, golds[:, None].to(logits.device))[:, 0]


def _replace_heads(mean_activations: torch.Tensor, rows_heads: dict[int, tuple[torch.Tensor, torch.Tensor]]):
    """Edits for :func:`edit_head_outputs`: in layer l, row r's head h gets the clean mean.

    ``rows_heads[l] = (rows, heads)``: which batch rows patch which head of layer ``l``
    (only the last position is replaced, as in Todd et al.).
    """
    def make(layer: int, rows: torch.Tensor, heads: torch.Tensor):
        def edit(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            x[rows, -1, heads] = mean_activations[layer, heads].to(x.dtype)
            return x
        return edit
    return {layer: make(layer, rows, heads) for layer, (rows, heads) in rows_heads.items()}


@torch.no_grad()
def indirect_effects(model, tokenizer, prompts: Sequence[str], answers: Sequence[str],
                     mean_activations: torch.Tensor, batch_size: int = 512,
                     progress: bool = False) -> torch.Tensor:
    """Indirect effect of every head on each corrupted prompt: ``[n_prompts, layers, heads]``.

    For prompt ``i`` and head ``(l, h)``: P(first token of ``answers[i]``) with head ``h`` of
    layer ``l`` replaced at the last position by ``mean_activations[l, h]``, minus the same
    probability unpatched. The prefix (all but the last token) is run once per prompt batch;
    each patched pass then runs only the last token against a copy of the cached keys and
    values, many heads at once (``batch_size`` patched rows per pass).
    """
    check_prompts(prompts, answers)
    check_tensor("mean_activations", mean_activations, floating=True)
    check_positive_int("batch_size", batch_size)
    layout = model_layout(model)
    n_layers, n_heads = layout.n_layers, layout.n_heads
    if tuple(mean_activations.shape) != (n_layers, n_heads, layout.head_dim):
        raise ValueError(f"mean_activations must be [layers, heads, head_dim] = [{n_layers}, {n_heads}, "
                         f"{layout.head_dim}], got {list(mean_activations.shape)}")
    golds = first_answer_tokens(tokenizer, prompts, answers)
    device = model_device(model)
    all_heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    heads_per_pass = min(len(all_heads), batch_size)
    prompts_per_batch = max(1, batch_size // heads_per_pass)
    ids = prompt_ids(tokenizer, prompts)
    check_fits(model, ids)
    effects = torch.zeros(len(prompts), n_layers, n_heads)
    steps = list(batches(len(ids), prompts_per_batch))
    for sl in tqdm(steps, desc="indirect effects", disable=not progress):
        batch = encode_batch(tokenizer, ids[sl], device)
        b = len(ids[sl])
        prefix = prefix_cache(model, batch)
        if prefix is None:
            raise ValueError("the head scan reuses each prompt's key-value cache: it needs prompts of at least two "
                             "tokens and a model whose forward pass keeps a cache (use_cache=True)")
        base = gold_probs(last_column(model, batch, copy.deepcopy(prefix)).logits[:, -1], golds[sl])
        for group in batches(len(all_heads), heads_per_pass):
            heads = all_heads[group]
            k = len(heads)
            # Row p * k + j of the expanded batch is prompt p with head heads[j] patched.
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(k)
            rows_heads = {}
            for layer in {layer for layer, _ in heads}:
                js = [j for j, (lay, _) in enumerate(heads) if lay == layer]
                rows = torch.tensor([p * k + j for p in range(b) for j in js], device=device)
                hs = torch.tensor([heads[j][1] for _ in range(b) for j in js], device=device)
                rows_heads[layer] = (rows, hs)
            with edit_head_outputs(model, _replace_heads(mean_activations.to(device), rows_heads)):
                logits = last_column(model, batch, cache, repeat=k).logits[:, -1]
            patched = gold_probs(logits, golds[sl].repeat_interleave(k)).view(b, k).cpu()
            for j, (layer, head) in enumerate(heads):
                effects[sl, layer, head] = patched[:, j] - base.cpu()
    return effects


@torch.no_grad()
def indirect_effects_reference(model, tokenizer, prompts: Sequence[str], answers: Sequence[str],
                               mean_activations: torch.Tensor) -> torch.Tensor:
    """The same effects as :func:`indirect_effects`, one full forward pass per prompt and head.

    This is how the reference code computes them (batch size 1, whole prompt every time);
    it is slow by design and serves as the ground truth for tests and the benchmark.
    """
    layout = model_layout(model)
    golds = first_answer_tokens(tokenizer, prompts, answers)
    device = model_device(model)
    effects = torch.zeros(len(prompts), layout.n_layers, layout.n_heads)
    for i, ids in enumerate(prompt_ids(tokenizer, prompts)):
        batch = encode_batch(tokenizer, [ids], device)
        base = gold_probs(model(**batch).logits[:, -1], golds[i:i + 1])
        for layer in range(layout.n_layers):
            for head in range(layout.n_heads):
                rows_heads = {layer: (torch.tensor([0]), torch.tensor([head]))}
                with edit_head_outputs(model, _replace_heads(mean_activations.to(device), rows_heads)):
                    patched = gold_probs(model(**batch).logits[:, -1], golds[i:i + 1])
                effects[i, layer, head] = float(patched - base)
    return effects
