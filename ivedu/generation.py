"""Batched forward passes over text prompts: next-token logits, answer log-probabilities,
greedy decoding.

Prompts are left-padded so that every prompt's last token sits at position ``-1``; position
ids are computed from the attention mask so padding does not shift positions. The functions
work for any Hugging Face causal LM and its tokenizer.

An answer's tokens are what follows its prompt in the model's own tokenizer
(:func:`ivedu.prompts.answer_ids`).
"""

from __future__ import annotations

import copy
import inspect
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ivedu.architectures import unwrap
from ivedu.arguments import check_int, check_positive_int, check_prompts, check_sequence
from ivedu.checks import check_context_length
from ivedu.prompts import continuation_ids


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (where inputs must go)."""
    return next(model.parameters()).device


def encode_batch(tokenizer: PreTrainedTokenizerBase, ids: Sequence[Sequence[int]],
                 device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Left-pad token-id lists into ``input_ids``, ``attention_mask`` and ``position_ids``: [batch, seq]."""
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        if len(row):
            input_ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device),
            "position_ids": position_ids.to(device)}


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt, with the tokenizer's special tokens (BOS where it adds one)."""
    return [tokenizer.encode(p) for p in prompts]


def check_fits(model: torch.nn.Module, ids: Sequence[Sequence[int]], extra: int = 0, what: str = "prompt") -> None:
    """Raise ``ValueError`` if the longest row of ``ids``, plus ``extra`` tokens to generate,
    exceeds the model's context (see :func:`ivedu.checks.check_context_length`)."""
    if ids:
        check_context_length(model, max(len(x) for x in ids) + extra, what)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    check_int("n", n, 0)
    check_positive_int("batch_size", batch_size)
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def next_token_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits at each row's last position, ``[batch, vocab]``, from one forward pass.

    The model is asked for the last position's logits alone (``logits_to_keep=1``) when its
    forward pass takes that argument, as transformers' causal LMs do: the output layer then
    runs on one position, not on all of them. On SmolLM2 that spares a ``[batch, length,
    vocab]`` tensor -- 1.2 GB for 128 chat prompts of 48 tokens -- of which one row is used.
    """
    if _takes_logits_to_keep(model):
        return model(**batch, logits_to_keep=1).logits[:, -1]
    return model(**batch).logits[:, -1]


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters


@torch.no_grad()
def last_token_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                      batch_size: int = 128) -> torch.Tensor:
    """Logits of the token after each prompt: [n_prompts, vocab], float32 on the CPU."""
    ids = prompt_ids(tokenizer, prompts)
    check_fits(model, ids)
    out = []
    for sl in batches(len(ids), batch_size):
        batch = encode_batch(tokenizer, ids[sl], model_device(model))
        out.append(next_token_logits(model, batch).float().cpu())
    return torch.cat(out)


Context = Callable[[], AbstractContextManager]  # a factory of a steering context (a hook), entered per pass


def prefix_cache(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """The key-value cache of ``batch`` without its last column, or ``None`` where there is none to
    keep (a model whose forward keeps no cache, or prompts of one token).

    A prompt's positions before its last do not depend on anything added at the last position
    (attention is causal): a steering that acts only there can start from this cache, and one
    prompt pass serves every steering (:func:`last_token_logits_each`, :func:`greedy_generate_each`)."""
    if batch["input_ids"].shape[1] < 2 or not _takes_cache(model):
        return None
    out = model(**{k: v[:, :-1] for k, v in batch.items()}, use_cache=True, **_first_logit_only(model))
    return returned_cache(out)


def _first_logit_only(model: torch.nn.Module) -> dict:
    return {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}


def last_column(model: torch.nn.Module, batch: dict[str, torch.Tensor], cache, repeat: int = 1):
    """The forward pass of ``batch``'s last column over ``cache``, its earlier columns' key-value
    cache (:func:`prefix_cache`), each prompt ``repeat`` times in a row (the cache grown to match
    with ``batch_repeat_interleave(repeat)``): the output, whose ``logits[:, -1]`` and cache are
    those of the whole prompt's pass. The pass extends ``cache``: give it a copy to keep the prefix
    for the next pass."""
    def rows(t: torch.Tensor) -> torch.Tensor:
        return t if repeat == 1 else t.repeat_interleave(repeat, dim=0)
    return model(input_ids=rows(batch["input_ids"][:, -1:]), attention_mask=rows(batch["attention_mask"]),
                 position_ids=rows(batch["position_ids"][:, -1:]), use_cache=True, **cache_kwargs(model, cache))


@torch.no_grad()
def last_token_logits_each(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                           contexts: Sequence[Context], batch_size: int = 128) -> list[torch.Tensor]:
    """Per context, :func:`last_token_logits` with that context entered: ``[n_prompts, vocab]`` each.

    Every context must act at the prompts' last position only (a steering hook with
    ``positions="last"``, as every score of a vector is measured). The positions before it run
    once per batch (:func:`prefix_cache`) and each context costs a pass of one token: a sweep of
    many (layer, scale) cells costs about one prompt pass, not one per cell. Where no cache can
    be kept, each context runs the whole prompt, as :func:`last_token_logits` does."""
    ids = prompt_ids(tokenizer, prompts)
    check_fits(model, ids)
    out: list[list[torch.Tensor]] = [[] for _ in contexts]
    for sl in batches(len(ids), batch_size):
        batch = encode_batch(tokenizer, ids[sl], model_device(model))
        prefix = prefix_cache(model, batch)
        for rows, context in zip(out, contexts):
            with context():
                logits = next_token_logits(model, batch) if prefix is None \
                    else last_column(model, batch, copy.deepcopy(prefix)).logits[:, -1]
            rows.append(logits.float().cpu())
    return [torch.cat(rows) for rows in out]


@torch.no_grad()
def answer_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                    answers: Sequence[str], batch_size: int = 128) -> torch.Tensor:
    """Sum of log-probabilities of each answer's tokens after its prompt (teacher forced): [n].

    The answer's tokens are those it has after its own prompt (:func:`ivedu.prompts.answer_ids`), so each
    row is scored on exactly the ids of ``join_answer(prompt, answer)``.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers; give one answer per prompt")
    rows = [(p, continuation_ids(tokenizer, p, text, a))
            for p, text, a in zip(prompt_ids(tokenizer, prompts), prompts, answers)]
    if rows:
        check_context_length(model, max(len(p) + len(a) for p, a in rows), "prompt with its answer")
    out = []
    for sl in batches(len(rows), batch_size):
        chunk = rows[sl]
        batch = encode_batch(tokenizer, [p + a for p, a in chunk], model_device(model))
        out.extend(_answer_sums(model(**batch).logits, [a for _, a in chunk]))
    return torch.stack(out)


def _answer_sums(logits: torch.Tensor, answers: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Each row's summed log-probability of its answer ids, which end its left-padded row of
    ``logits`` ([batch, width, vocab]): one scalar tensor per row, on the CPU."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    width = logits.shape[1]
    out = []
    for i, a in enumerate(answers):
        # Answer token j sits at width - len(a) + j and is predicted one position earlier.
        pos = torch.arange(width - len(a), width, device=logprobs.device)
        target = torch.tensor(a, device=logprobs.device)
        out.append(logprobs[i, pos - 1, target].sum().cpu())
    return out


# transformers 5.24 renamed the forward pass's ``past_key_values`` to ``cache`` (the old name is
# deprecated, to be removed in 5.40); releases before it know only the old name.
@torch.no_grad()
def cache_kwargs(model, cache) -> dict:
    """``{"cache": cache}`` or ``{"past_key_values": cache}``, whichever ``model.forward`` takes."""
    params = inspect.signature(unwrap(model).forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


def returned_cache(output):
    """The key-value cache a forward pass with ``use_cache=True`` returned, under either name
    (``None`` when the model keeps none)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _takes_cache(model: torch.nn.Module) -> bool:
    return "use_cache" in inspect.signature(unwrap(model).forward).parameters


@torch.no_grad()
def greedy_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                    max_new_tokens: int = 6, batch_size: int = 128, *, stop: Sequence[str],
                    prompt_context: Callable[[], AbstractContextManager] = nullcontext,
                    step_context: Callable[[], AbstractContextManager] = nullcontext,
                    use_cache: bool = True) -> list[str]:
    """Greedy continuations of each prompt, cut at EOS or at any ``stop`` string, stripped.

    ``stop``: the prompt format's end of an answer (:attr:`ivedu.prompts.PromptFormat.stop`:
    ``";"`` in the tiny format, a chat template's end of turn, cut at its token id where it is a
    special token); ``()``: EOS alone.

    The prompt runs once and each new token is one more forward pass of length 1 over the key-value
    cache, as ``generate`` does; with ``use_cache=False``, or a model whose forward keeps no
    cache, each step re-runs the whole sequence instead (the plain loop the cached one is
    tested and benchmarked against). Steering hooks say where they act through two context
    factories: ``prompt_context()`` is entered around the prompt's pass, ``step_context()``
    around each new token's pass. A hook entered there with ``positions="last"`` acts at the
    prompt's last token and, in ``step_context``, at every generated token: in a cached step
    the last position is the new token. Hooks left open around the call see the same passes.
    """
    if len(check_sequence("prompts", prompts)):  # none: nothing to generate
        check_prompts(prompts)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("batch_size", batch_size)
    ids = prompt_ids(tokenizer, prompts)
    check_fits(model, ids, max_new_tokens, f"prompt plus {max_new_tokens} generated tokens")
    ends = _end_ids(tokenizer, stop)
    texts: list[str] = []
    for sl in batches(len(ids), batch_size):
        batch = encode_batch(tokenizer, ids[sl], model_device(model))
        rows = _greedy_rows(model, tokenizer, batch, max_new_tokens, prompt_context, step_context,
                            use_cache and _takes_cache(model))
        texts.extend(_decode(tokenizer, row, stop, ends) for row in rows)
    return texts


@torch.no_grad()
def greedy_generate_each(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                         contexts: Sequence[tuple[Context, Context]], max_new_tokens: int = 6, batch_size: int = 128, *,
                         stop: Sequence[str]) -> list[list[str]]:
    """Per ``(prompt_context, step_context)`` pair, :func:`greedy_generate` under it.

    As in :func:`last_token_logits_each`, each ``prompt_context`` must act at the prompt's last
    position only: the positions before it run once per batch into a key-value cache, and each
    pair starts from a copy of it (one token, then its own generated tokens). Where the model
    keeps no cache, each pair runs :func:`greedy_generate`'s plain loop."""
    ids = prompt_ids(tokenizer, prompts)
    check_fits(model, ids, max_new_tokens, f"prompt plus {max_new_tokens} generated tokens")
    ends = _end_ids(tokenizer, stop)
    texts: list[list[str]] = [[] for _ in contexts]
    for sl in batches(len(ids), batch_size):
        batch = encode_batch(tokenizer, ids[sl], model_device(model))
        prefix = prefix_cache(model, batch)
        for out, (prompt_context, step_context) in zip(texts, contexts):
            rows = _greedy_rows(model, tokenizer, batch, max_new_tokens, prompt_context, step_context,
                                prefix is not None, prefix)
            out.extend(_decode(tokenizer, row, stop, ends) for row in rows)
    return texts


def _end_ids(tokenizer: PreTrainedTokenizerBase, stop: Sequence[str]) -> set[int]:
    """The token ids an answer ends at: EOS, and each ``stop`` string the tokenizer holds as one
    special token (a chat template's ``<|im_end|>`` or ``<end_of_turn>``), which decoding drops,
    so that its text never shows to be cut at."""
    special = set(tokenizer.all_special_tokens)
    return {tokenizer.eos_token_id} | {tokenizer.convert_tokens_to_ids(s) for s in stop if s in special}


def _decode(tokenizer: PreTrainedTokenizerBase, row: list[int], stop: Sequence[str], ends: set[int]) -> str:
    """A generated row as text: cut at the first of ``ends`` (:func:`_end_ids`) and at any ``stop``
    string, whitespace collapsed."""
    cut = next((i for i, token in enumerate(row) if token in ends), len(row))
    text = tokenizer.decode(row[:cut], skip_special_tokens=True)
    for s in stop:
        text = text.split(s)[0]
    return " ".join(text.split())


def _greedy_rows(model, tokenizer, batch: dict[str, torch.Tensor], max_new_tokens: int,
                 prompt_context: Callable[[], AbstractContextManager],
                 step_context: Callable[[], AbstractContextManager], cached: bool, prefix=None) -> list[list[int]]:
    """The greedy token ids after each row of ``batch``, ``max_new_tokens`` long (fewer once
    every row has produced EOS); ``cached``: one pass of length 1 per new token; ``prefix``:
    the cache of the prompt without its last token (:func:`prefix_cache`), to start from."""
    with prompt_context():
        if prefix is not None:
            out = last_column(model, batch, copy.deepcopy(prefix))
            cache, logits = returned_cache(out), out.logits[:, -1]
        elif cached:
            out = model(**batch, use_cache=True, logits_to_keep=1) if _takes_logits_to_keep(model) \
                else model(**batch, use_cache=True)
            cache, logits = returned_cache(out), out.logits[:, -1]
            cached = cache is not None
        else:
            logits = next_token_logits(model, batch)
    generated = [logits.argmax(-1)]
    for _ in range(max_new_tokens - 1):
        if tokenizer.eos_token_id is not None and bool((torch.stack(generated, 1) == tokenizer.eos_token_id).any(1).all()):
            break
        batch = _append(batch, generated[-1])
        with step_context():
            if cached:
                out = model(input_ids=batch["input_ids"][:, -1:], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"][:, -1:], use_cache=True, **cache_kwargs(model, cache))
                cache, logits = returned_cache(out), out.logits[:, -1]
            else:
                logits = next_token_logits(model, batch)
        generated.append(logits.argmax(-1))
    return torch.stack(generated, 1).tolist()


def _append(batch: dict[str, torch.Tensor], next_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    ones = torch.ones_like(next_ids)[:, None]
    return {
        "input_ids": torch.cat([batch["input_ids"], next_ids[:, None]], 1),
        "attention_mask": torch.cat([batch["attention_mask"], ones], 1),
        "position_ids": torch.cat([batch["position_ids"], batch["position_ids"][:, -1:] + 1], 1),
    }


def top_next_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str,
                    k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``prompt`` with their probabilities."""
    probs = torch.softmax(last_token_logits(model, tokenizer, [prompt])[0], -1)
    values, ids = probs.topk(k)
    return [(tokenizer.decode([int(i)]).strip(), float(v)) for v, i in zip(values, ids)]


# How far the best logit must lead the second for a teacher-forced pass's argmax to stand for
# greedy decoding's. The two compute the same logits in another order (the whole sequence at once
# against a key-value cache token by token, other padding widths), which moves a float32 logit
# by about 1e-5; bfloat16 keeps 8 bits, so a logit near 20 moves in steps of 0.125.
DECIDED_MARGIN = {torch.float64: 1e-6, torch.float32: 1e-2}
HALF_PRECISION_MARGIN = 1.0


def decided_margin(dtype: torch.dtype) -> float:
    """The lead of the best logit over the second (:data:`DECIDED_MARGIN`) above which a
    teacher-forced pass's argmax is taken for greedy decoding's, for logits of ``dtype``."""
    return DECIDED_MARGIN.get(dtype, HALF_PRECISION_MARGIN)


@dataclass(frozen=True)
class ForcedAnswers:
    """What one teacher-forced pass over each prompt and its answer proves about greedy decoding
    (:func:`forced_greedy`), one entry per prompt.

    ``answers``: :func:`greedy_generate`'s answer where the pass proves it (the greedy tokens are
    the answer's and what follows them is decided), ``None`` where only decoding can tell;
    ``first``: the greedy first token after the prompt, ``None`` where its best two logits are
    within the margin; ``logprobs``: ``[n]`` the answers' summed log-probabilities, the values
    :func:`answer_logprobs` gives (``None`` unless asked for).
    """

    answers: list[str | None]
    first: list[int | None]
    logprobs: torch.Tensor | None = None


@torch.no_grad()
def forced_greedy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  answers: Sequence[str], max_new_tokens: int, batch_size: int = 128, *, stop: Sequence[str],
                  logprobs: bool = False) -> ForcedAnswers:
    """Greedy answers, decided in one teacher-forced pass over each prompt and its ``answers``
    (:func:`ivedu.prompts.answer_ids`) wherever that provably equals :func:`greedy_generate` with
    the same ``max_new_tokens`` and ``stop``.

    Greedy decoding feeds the model its own argmax tokens. Where every argmax along the answer
    is the answer's next token, greedy decoding runs over exactly the ids of this pass, so its
    answer is these ids, then what it writes after them: the pass's argmax after the last answer
    token, then (where that neither ends the answer at EOS or a ``stop`` token nor reaches
    ``max_new_tokens``) cached steps of one token, as :func:`greedy_generate` takes them, until the
    row ends. The text is cut as :func:`greedy_generate` cuts it.

    Two computations of the same logits differ in their last bits, so an argmax is taken only
    where the best logit leads the second by more than :func:`decided_margin` (0.01 in float32):
    a near tie, a wrong token along the answer (greedy writing the same text through other
    tokens included), an answer longer than ``max_new_tokens - 1`` tokens: each leaves that
    row's answer ``None``, for decoding to give. The pass is that of :func:`answer_logprobs`
    (same rows, batches and operations); ``logprobs=True`` returns its values, bit for bit.
    """
    if len(check_sequence("prompts", prompts)):  # none: nothing to decide
        check_prompts(prompts, answers)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("batch_size", batch_size)
    ids = prompt_ids(tokenizer, prompts)
    check_fits(model, ids, max_new_tokens, f"prompt plus {max_new_tokens} generated tokens")
    golds = [continuation_ids(tokenizer, p, text, a) for p, text, a in zip(ids, prompts, answers)]
    check_fits(model, [p + a for p, a in zip(ids, golds)], what="prompt with its answer")
    ends = _end_ids(tokenizer, stop)
    dtype = next(model.parameters()).dtype
    cached = _takes_cache(model)
    texts: list[str | None] = []
    firsts: list[int | None] = []
    sums: list[torch.Tensor] = []
    for sl in batches(len(ids), batch_size):
        chunk = golds[sl]
        batch = encode_batch(tokenizer, [p + a for p, a in zip(ids[sl], chunk)], model_device(model))
        # The positions that predict each answer's tokens and the one after it: the last of every row.
        keep = max(len(a) for a in chunk) + 1
        extra = {} if logprobs or not _takes_logits_to_keep(model) else {"logits_to_keep": keep}
        out = model(**batch, use_cache=True, **extra) if cached else model(**batch, **extra)
        margin = max(decided_margin(dtype), decided_margin(out.logits.dtype))
        if logprobs:
            sums.extend(_answer_sums(out.logits, chunk))
        top, gap = _top_and_gap(out.logits[:, -keep:])
        rows: list[list[int] | None] = []
        for i, a in enumerate(chunk):
            best, lead = top[i][keep - len(a) - 1:], gap[i][keep - len(a) - 1:]
            firsts.append(best[0] if lead[0] > margin else None)
            follows = len(a) < max_new_tokens and best[:len(a)] == a and all(g > margin for g in lead)
            rows.append(a + [best[-1]] if follows else None)
        cache = returned_cache(out) if cached else None
        _finish_rows(model, batch, rows, cache, max_new_tokens, ends, margin)
        texts.extend(None if row is None else _decode(tokenizer, row, stop, ends) for row in rows)
    return ForcedAnswers(texts, firsts, torch.stack(sums) if logprobs and sums else None)


def _top_and_gap(logits: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
    """The argmax at each position of ``logits`` ([batch, positions, vocab]) and its lead over the
    second best, as nested lists."""
    values, indices = logits.float().topk(2, dim=-1)
    return indices[..., 0].tolist(), (values[..., 0] - values[..., 1]).tolist()


def _finish_rows(model, batch: dict[str, torch.Tensor], rows: list[list[int] | None], cache,
                 max_new_tokens: int, ends: set[int], margin: float) -> None:
    """Extend in place each row of greedy tokens not yet done -- neither ended (a token of
    ``ends``) nor ``max_new_tokens`` long -- by greedy steps after ``batch``, whose rows end where
    the greedy rows start: one token per step over ``cache`` as :func:`greedy_generate` steps,
    or a whole pass where there is no cache. A row whose step is a near tie becomes ``None``."""
    while True:
        open_rows = {i for i, row in enumerate(rows)
                     if row is not None and len(row) < max_new_tokens and not ends.intersection(row)}
        if not open_rows:
            return
        # The batch steps whole; a row that is done steps on its last token, and its step is not read.
        step = [row[-1] if row else 0 for row in rows]
        batch = _append(batch, torch.tensor(step, device=batch["input_ids"].device))
        if cache is not None:
            out = model(input_ids=batch["input_ids"][:, -1:], attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"][:, -1:], use_cache=True, **cache_kwargs(model, cache))
            cache, logits = returned_cache(out), out.logits[:, -1]
        else:
            logits = next_token_logits(model, batch)
        top, gap = _top_and_gap(logits[:, None])
        for i in open_rows:
            rows[i] = rows[i] + [top[i][0]] if gap[i][0] > margin else None
