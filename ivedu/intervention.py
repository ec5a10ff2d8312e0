"""Instruction vectors: build one from the heads a scan found, add it, and measure what it does.

The instruction vector of a task is the sum of its top heads' mean outputs, each pushed
through its layer's attention output projection (Todd et al.'s function vector with the
instruction in place of the demonstrations):

    IV = sum over (l, h) in top heads of  W_O^(l)[:, h] @ mean_activation[l, h]      ([hidden])

Adding it to the residual stream in a layer, on prompts that lack the instruction, tests
whether it carries the task. The controls are a random vector of the same norm and another
task's vector. Where and how strongly a vector is added is one value, a :class:`Steering`
(layer, scale, site, positions); the ``*_each`` functions score many ``(vector, Steering)``
pairs on the same prompts for about the price of one.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch

from ivedu.architectures import check_head, check_layer, model_layout, project_heads
from ivedu.arguments import (check_choice, check_int, check_number, check_prompts, check_seed, check_sequence,
                             check_str, check_tensor, check_unique)
from ivedu.evaluation import exact_match, first_token_accuracy
from ivedu.generation import greedy_generate, greedy_generate_each, last_token_logits_each
from ivedu.hooks import SITES, add_to_residual
from ivedu.mediation import Head, first_answer_tokens
from ivedu.prompts import answer_ids
from ivedu.study import ModelUnderStudy


@dataclass(frozen=True)
class InstructionVector:
    """A task's instruction vector and where it came from.

    ``vector``: ``[hidden]``, float32. ``heads``: the (layer, head) pairs summed, best first.
    """

    task: str
    vector: torch.Tensor
    heads: tuple[Head, ...]

    @property
    def norm(self) -> float:
        return float(self.vector.norm())


def instruction_vector(model, mean_activations: torch.Tensor, heads: Sequence[Head], task: str = "") -> InstructionVector:
    """Sum of the chosen heads' output-projected mean activations: the task's vector.

    ``mean_activations``: ``[layers, heads, head_dim]`` from
    :func:`ivedu.mediation.mean_head_activations`; ``heads``: e.g. ``scan.top_heads(4)``.
    """
    check_tensor("mean_activations", mean_activations, 3, floating=True)
    check_sequence("heads", heads)
    if not heads:
        raise ValueError("no heads given: choose at least one (layer, head), e.g. scan.top_heads(4)")
    for i, pair in enumerate(heads):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"heads[{i}] must be a (layer, head) pair, got {pair!r}: pass e.g. heads=[(0, 1)]")
        check_int(f"heads[{i}] layer", pair[0])
        check_int(f"heads[{i}] head", pair[1])
    check_unique("heads", [tuple(pair) for pair in heads])
    check_str("task", task, nonempty=False)
    layout = model_layout(model)
    if tuple(mean_activations.shape) != (layout.n_layers, layout.n_heads, layout.head_dim):
        raise ValueError(f"mean_activations must be [layers, heads, head_dim] = [{layout.n_layers}, {layout.n_heads}, "
                         f"{layout.head_dim}] for this model, got {list(mean_activations.shape)}")
    vector = torch.zeros(layout.hidden_size, device=mean_activations.device)
    with torch.no_grad():
        for layer, head in heads:
            check_layer(layout, layer)
            check_head(layout, head)
            projected = project_heads(layout, layer, mean_activations[layer].to(_proj_dtype(layout, layer)))
            vector += projected[head].float()
    return InstructionVector(task, vector.cpu(), tuple(heads))


def _proj_dtype(layout, layer: int) -> torch.dtype:
    return next(layout.out_projs[layer].parameters()).dtype


def random_vector_like(vector: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random direction with the same norm as ``vector``: the control an IV must beat."""
    check_tensor("vector", vector, floating=True)
    check_seed("seed", seed)
    generator = torch.Generator().manual_seed(seed)
    r = torch.randn(vector.shape, generator=generator)
    return r / r.norm() * vector.norm()


@dataclass(frozen=True)
class Steering:
    """Where and how strongly a vector is added to the residual stream: in decoder layer
    ``layer``, at ``site`` (``"attention"``: the attention output projection's output;
    ``"layer"``: the decoder layer's output; :func:`ivedu.hooks.add_to_residual`), times
    ``scale`` (negative: subtracted), at ``positions`` (``"last"``: each prompt's last token,
    where every score of a vector is measured; a ``[batch]`` tensor: one position per row)."""

    layer: int
    scale: float
    site: str
    positions: str | int | slice | torch.Tensor = "last"

    def __post_init__(self) -> None:
        check_int("layer", self.layer, 0)
        check_number("scale", self.scale)
        check_choice("site", self.site, SITES)

    def add(self, model, vector: torch.Tensor):
        """The context in which ``model`` runs with ``scale * vector`` added here."""
        return add_to_residual(model, self.layer, vector, positions=self.positions, scale=self.scale, site=self.site)


Steer = tuple[torch.Tensor | None, Steering | None]  # (vector or None, where it is added): one steering of a sweep


def _steering(model, vector: torch.Tensor | None, steering: Steering | None, each: bool = False):
    """A factory of the steering context: ``vector`` added as ``steering`` says (none when
    ``vector`` is ``None``). ``each``: for the sweeps that share the prompts' earlier positions,
    which need the vector at the last token only."""
    if vector is not None and steering is None:
        raise ValueError("a vector needs a Steering(layer, scale, site) that says where to add it")
    if vector is not None and each and not (isinstance(steering.positions, str) and steering.positions == "last"):
        raise ValueError(f"a sweep adds each vector at the last prompt token only, not at {steering.positions!r}: "
                         "the positions before it are computed once for every steering")

    def steer():
        return nullcontext() if vector is None else steering.add(model, vector)
    return steer


def steered_first_token_hits(lm: ModelUnderStudy, prompts: Sequence[str], answers: Sequence[str],
                             vector: torch.Tensor | None, steering: Steering | None) -> list[bool]:
    """Per prompt, whether its most likely next token is the answer's first token, with
    ``vector`` added as ``steering`` says (``None``: no vector)."""
    check_prompts(prompts, answers)
    with _steering(lm.model, vector, steering)():
        return first_token_accuracy(lm, prompts, answers)


def steered_first_token_hits_each(lm: ModelUnderStudy, prompts: Sequence[str], answers: Sequence[str],
                                  steers: Sequence[Steer]) -> list[list[bool]]:
    """Per ``(vector, steering)`` of ``steers``, what :func:`steered_first_token_hits` gives:
    the same prompts under many steerings for about the price of one pass
    (:func:`ivedu.generation.last_token_logits_each`: each vector acts at the last token only, so
    the positions before it are computed once)."""
    check_prompts(prompts, answers)
    check_sequence("steers", steers)
    contexts = [_steering(lm.model, vector, steering, each=True) for vector, steering in steers]
    firsts = first_answer_tokens(lm.tokenizer, prompts, answers)
    return [(logits.argmax(-1) == firsts).tolist()
            for logits in last_token_logits_each(lm.model, lm.tokenizer, prompts, contexts)]


def steered_first_token_accuracy(lm: ModelUnderStudy, prompts: Sequence[str], answers: Sequence[str],
                                 vector: torch.Tensor | None, steering: Steering | None) -> float:
    """Share of prompts whose most likely next token is the answer's first token, with
    ``vector`` added as ``steering`` says (``None``: no vector)."""
    hits = steered_first_token_hits(lm, prompts, answers, vector, steering)
    return sum(hits) / len(hits)


def steered_answers(lm: ModelUnderStudy, prompts: Sequence[str], answers: Sequence[str],
                    vector: torch.Tensor | None, steering: Steering | None, on_generated: bool = False,
                    batch_size: int = 64) -> list[str]:
    """The greedy answers to ``prompts`` with ``vector`` added as ``steering`` says: what
    :func:`steered_exact_match` scores, kept so that a reader can count them (a vector that
    makes every answer "positive" shows as one answer, not as a score).

    ``answers``: the gold answers, read only to size the generation (the longest, plus one
    token). ``on_generated=True`` also adds the vector at every generated token, as the
    reference code's KV-cached ``generate`` does; the default adds it once, at the last prompt
    token where the first-token metric adds it, and lets the answer's later tokens read it
    through attention (the prompt's cached keys and values carry it). Each answer ends where
    ``lm.fmt`` ends one (:attr:`ivedu.prompts.PromptFormat.stop`)."""
    check_prompts(prompts, answers)
    max_new = max(len(answer_ids(lm.tokenizer, p, a)) for p, a in zip(prompts, answers)) + 1
    steer = _steering(lm.model, vector, steering)
    return greedy_generate(lm.model, lm.tokenizer, list(prompts), max_new_tokens=max_new, batch_size=batch_size,
                           stop=lm.fmt.stop, prompt_context=steer, step_context=steer if on_generated else nullcontext)


def steered_answers_each(lm: ModelUnderStudy, prompts: Sequence[str], answers: Sequence[str], steers: Sequence[Steer],
                         on_generated: bool = False, batch_size: int = 64) -> list[list[str]]:
    """Per ``(vector, steering)`` of ``steers``, what :func:`steered_answers` gives, the
    prompts' positions before the last computed once for all of them
    (:func:`ivedu.generation.greedy_generate_each`)."""
    check_prompts(prompts, answers)
    check_sequence("steers", steers)
    max_new = max(len(answer_ids(lm.tokenizer, p, a)) for p, a in zip(prompts, answers)) + 1
    contexts = []
    for vector, steering in steers:
        steer = _steering(lm.model, vector, steering, each=True)
        contexts.append((steer, steer if on_generated else nullcontext))
    return greedy_generate_each(lm.model, lm.tokenizer, list(prompts), contexts, max_new_tokens=max_new,
                                batch_size=batch_size, stop=lm.fmt.stop)


def steered_exact_match(lm: ModelUnderStudy, prompts: Sequence[str], answers: Sequence[str],
                        vector: torch.Tensor | None, steering: Steering | None, on_generated: bool = False,
                        batch_size: int = 64) -> float:
    """Greedy exact match of :func:`steered_answers` against ``answers``, in [0, 1]."""
    predictions = steered_answers(lm, prompts, answers, vector, steering, on_generated, batch_size)
    return sum(exact_match(predictions, answers)) / len(answers)
