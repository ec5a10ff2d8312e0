"""Checks on a reader's input, shared by the package: each says what is wrong and how to fix it.

Bad input in this method rarely crashes; it quietly gives a wrong number. A prompt longer
than the model's context is still scored (on positions the model never trained on), a
first-token metric still returns an accuracy when two answers start with the same token,
and a training run that hit ``nan`` still draws a loss curve. These checks turn those cases
into an error or a warning at the point where they happen. The README's table "Bad input
and the errors it gets" lists every one with its test.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch

from ivedu.prompts import answer_ids

# Config attributes that hold a model's number of positions, in the order they are tried.
CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length")


class AmbiguousFirstTokenWarning(UserWarning):
    """Different answers of one metric start with the same token, so first-token accuracy
    cannot tell them apart."""


def context_length(model) -> int | None:
    """The number of positions ``model`` takes (``model`` may be peft-wrapped, or a config),
    or ``None`` when its config does not say."""
    from ivedu.architectures import unwrap  # peft is imported only when a model is checked

    config = getattr(unwrap(model), "config", model)
    for attr in CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context_length(model, n_tokens: int, what: str = "prompt") -> None:
    """Raise ``ValueError`` if ``n_tokens`` positions do not fit in ``model``'s context.

    Past its last trained position a rotary model still returns logits, but meaningless
    ones, and a model with learnt positions (GPT-2) fails with an index error deep inside;
    both are caught here, before any forward pass. A model whose config names no limit is
    not checked.
    """
    limit = context_length(model)
    if limit is not None and n_tokens > limit:
        raise ValueError(f"the {what} is {n_tokens} tokens long but the model takes at most {limit} positions "
                         f"(config.max_position_embeddings): shorten the prompt or use fewer demonstrations")


def warn_if_ambiguous_first_token(tokenizer, answers: Sequence[str],
                                  first_ids: Sequence[int] | None = None, stacklevel: int = 2, *,
                                  prompts: Sequence[str] | None = None) -> bool:
    """Warn (:class:`AmbiguousFirstTokenWarning`) when the tokenizer splits answers so that
    distinct answers share a first token that is only part of a word.

    First-token accuracy scores an answer by its first token alone. When a subword tokenizer
    cuts " paris" and " parma" into " par" + ..., the two are indistinguishable to it, and
    the metric says less than it seems. A shared first token that is a whole word (" [" for
    every bracketed list, a list's first item) is the task's own structure, not the
    tokenizer's doing, and is not warned. One warning per call names up to five shared
    tokens; exact match or the answer's log-probability tell the answers apart.
    ``first_ids``, when the caller has them already, are each answer's first token id;
    otherwise ``prompts`` (one per answer) give them: an answer's first token depends on what
    precedes it (``Ġparis`` after ``A:``, ``paris`` after a chat header's newline), so it is
    taken after the answer's own prompt (:func:`ivedu.prompts.answer_ids`).
    ``stacklevel`` is passed to :func:`warnings.warn`. Returns whether it warned. Silence it
    with ``warnings.simplefilter("ignore", AmbiguousFirstTokenWarning)``.
    """
    if first_ids is None:
        if prompts is None or len(prompts) != len(answers):
            raise ValueError("give each answer's first token id (first_ids) or its prompt (prompts=, one per "
                             "answer): an answer's first token depends on the prompt it follows")
        first_ids = [answer_ids(tokenizer, p, a)[0] for p, a in zip(prompts, answers)]
    by_token: dict[int, dict[str, str]] = {}  # split first token -> distinct answers (whitespace-normalised)
    for answer, token in zip(answers, first_ids):
        first_word = answer.split()[0] if answer.split() else ""
        if tokenizer.decode([int(token)]).strip() != first_word:  # the tokenizer cut the first word
            by_token.setdefault(int(token), {}).setdefault(" ".join(answer.split()), answer)
    shared = [(token, list(group.values())) for token, group in by_token.items() if len(group) > 1]
    if not shared:
        return False
    shown = "; ".join(f"{len(group)} start with {tokenizer.decode([token])!r} (e.g. {group[0]!r}, {group[1]!r})"
                      for token, group in shared[:5])
    more = f"; and {len(shared) - 5} more shared first tokens" if len(shared) > 5 else ""
    warnings.warn(f"the tokenizer splits answers so that different ones share their first token, and "
                  f"first-token accuracy cannot tell them apart: {shown}{more}. "
                  "Score these answers by exact match or log-probability.",
                  AmbiguousFirstTokenWarning, stacklevel=stacklevel)
    return True


def check_finite_loss(loss: torch.Tensor | float, step: int) -> None:
    """Raise ``FloatingPointError`` naming ``step`` if ``loss`` is ``nan`` or infinite.

    Call it before ``backward``: one ``nan`` step writes ``nan`` into every weight through
    the optimiser, and the run would go on drawing a curve of ``nan``.
    """
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise FloatingPointError(f"the training loss became {value} at step {step}; lower the learning rate "
                                 "(or raise the warm-up), check the data of that step, and train again")
