"""Checkers for chapter 0's exercise: which tokens are an answer's.

- Exercise 0.1, :func:`check_answer_tokens`: the token ids of an answer as it follows its
  prompt (reference: :func:`ivedu.prompts.answer_ids`).

The tiny model's tokenizer is word-level, so a wrong way of finding an answer's tokens
(encoding ``" " + answer`` on its own) can still come out right on it. The check therefore
also runs on the chapter's own tokenizer and prompt format when the chapter passes its model
under study (SmolLM2's byte-level BPE after its chat template on the smol profile, Qwen's on colab,
Llama-2's on paper), and on two tokenizers of the kinds real chat models use, trained here on
a few sentences in a fraction of a second, with no download: a byte-level BPE (GPT-2, SmolLM2,
Qwen: a space is part of the next token, ``Ġparis``) and a SentencePiece-style Unigram with
``▁`` for a space and a BOS on every encode (Llama-2). Token ids are exact on every profile,
so no case has a tolerance.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ivedu.exercises import Case, ExerciseError, call_learner, check_against_reference, passed, tiny_model, tiny_world
from ivedu.prompts import TINY_FORMAT, answer_ids, fewshot_prompt, instructed_prompt

SENTENCES = ["Q: What is the capital of France?\nA: Paris", "Q: What is the capital of Peru?\nA: Lima",
              "The capital of France is Paris.", "The capital of Peru is Lima.", "Paris is in France. Lima is in Peru.",
              "A: Paris\nA: Lima\nQ: capital?"] * 3
QA_PROMPT = "Q: What is the capital of France?\nA:"
HEADER_PROMPT = "Q: What is the capital of France?\n"  # ends as a chat template's assistant header does


@lru_cache(maxsize=1)
def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few sentences: no BOS on encode, a space inside the next token."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@lru_cache(maxsize=1)
def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style Unigram trained on a few sentences: ``▁`` marks a space, BOS on every encode."""
    core = Tokenizer(models.Unigram())
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    core.train_from_iterator(SENTENCES, trainers.UnigramTrainer(
        vocab_size=80, special_tokens=["<pad>", "<s>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                        special_tokens=[("<s>", core.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def _chapter_cases(lm, tasks) -> list[Case]:
    """Prompt/answer pairs of the chapter: the first test example of up to three of ``tasks``
    after its instructed prompt and after a two-shot prompt, both in ``lm.fmt``, with ``lm.tokenizer``."""
    cases = []
    for task in list(tasks)[:3]:
        example = (task.test or task.valid or task.train)[0]
        cases.append(Case(f"with the chapter's tokenizer, after the {task.name!r} task's instructed prompt in the "
                          f"chapter's format", (lm.tokenizer, instructed_prompt(task, example.input, 0, lm.fmt),
                                                example.output)))
        demos = [ex for ex in task.train if ex != example][:2]
        if demos:
            cases.append(Case(f"with the chapter's tokenizer, after a two-shot prompt of the {task.name!r} task",
                              (lm.tokenizer, fewshot_prompt(demos, example.input, lm.fmt), example.output)))
    return cases


def check_answer_tokens(answer_token_ids: Callable, lm=None, tasks=()) -> None:
    """Exercise 0.1: ``answer_token_ids(tokenizer, prompt, answer) -> list[int]``, the ids that
    ``encode(join_answer(prompt, answer))`` has after the ids of ``encode(prompt)``, and a
    ``ValueError`` when the prompt's ids are not the first ids of the joint text.

    Checked on the tiny model's tokenizer, then -- when given -- on the tokenizer of the chapter's
    model under study ``lm`` with prompts of up to three of ``tasks`` in its format (on a chat
    model, the answer follows the template's assistant header), then on the two trained
    tokenizers; exactly on every profile.
    """
    _, tiny = tiny_model()
    world = tiny_world()
    capital, bracket = world.task("capital"), world.task("bracket")
    fact, items = capital.test[0], bracket.test[0]
    byte_level, metaspace = byte_level_tokenizer(), metaspace_tokenizer()
    cases = [
        Case("with the tiny model's tokenizer, after an instructed prompt",
             (tiny, instructed_prompt(capital, fact.input, 0, TINY_FORMAT), fact.output)),
        Case("with the tiny model's tokenizer, a several-token answer after a few-shot prompt",
             (tiny, fewshot_prompt(bracket.train[:2], items.input, fmt=TINY_FORMAT), items.output)),
        *(_chapter_cases(lm, tasks) if lm is not None else []),
        Case("with a byte-level BPE (like SmolLM2's), after a prompt ending in 'A:'",
             (byte_level, QA_PROMPT, "Paris")),
        Case("with a byte-level BPE (like SmolLM2's), after a prompt ending in a newline, as a chat "
             "template's assistant header does", (byte_level, HEADER_PROMPT, "Paris")),
        Case("with a SentencePiece-style tokenizer (like Llama-2's, BOS on every encode), after 'A:'",
             (metaspace, QA_PROMPT, "Paris Lima")),
        Case("with a SentencePiece-style tokenizer, after a prompt ending in a newline",
             (metaspace, HEADER_PROMPT, "Paris")),
        Case("with a SentencePiece-style tokenizer, where the space before the answer is a token of its own",
             (metaspace, QA_PROMPT, "Fran")),
    ]
    n = check_against_reference(
        _spelled(answer_token_ids), _spelled(answer_ids), cases,
        hint="join the texts with ivedu.prompts.join_answer(prompt, answer), encode the joint text with "
             "tokenizer.encode (special tokens included, as the prompt is encoded), and return the ids after the "
             "first len(tokenizer.encode(prompt)) of them. Encoding the answer on its own (' ' + answer) is right "
             "only for a word-level tokenizer: a byte-level BPE puts the space inside the answer's first token, "
             "there is no space at all after a newline, and a tokenizer that adds BOS adds it to the answer too. "
             "(Results are shown as (token, id) pairs.)")
    merged = "A: "  # the BPE encodes "A: " with a trailing space token, but "A: Paris" as "A", ":", "ĠParis"
    got = call_learner(_refusing(answer_token_ids), byte_level, merged, "Paris",
                       label="with a byte-level BPE, after a prompt ending in a space")
    if got is not _REFUSED:
        raise ExerciseError(
            f"`{getattr(answer_token_ids, '__name__', 'your function')}` returned {got} for the prompt {merged!r} "
            "and the answer 'Paris' with a byte-level BPE, where the prompt's ids are not the first ids of the joint "
            "text (the tokenizer merged the prompt's trailing space into 'ĠParis'): the answer's tokens are not "
            "defined there, so raise ValueError.\nHint: compare joint[:len(before)] with before, the prompt's own "
            "ids, and raise ValueError when they differ.")
    where = "the tiny model's, the chapter's and two trained tokenizers" if lm is not None else "three tokenizers"
    passed("answer tokens", f"{n} prompt/answer pairs in {where} match ivedu.prompts.answer_ids, "
                            "and a merged prompt is refused")


def _spelled(fn: Callable) -> Callable:
    """``fn`` returning ``[(token, id), ...]`` instead of ids, so a difference reads as tokens
    (``'ĠParis'`` against ``'Paris'``); a result that is not a list of ids is returned as it is."""
    def wrapped(tokenizer, prompt, answer):
        ids = fn(tokenizer, prompt, answer)
        try:
            return [(tokenizer.convert_ids_to_tokens(int(i)), int(i)) for i in ids]
        except (TypeError, ValueError):
            return ids  # compare says what it is instead

    wrapped.__name__ = getattr(fn, "__name__", repr(fn))
    return wrapped


_REFUSED = object()


def _refusing(fn: Callable) -> Callable:
    """``fn`` returning ``_REFUSED`` when it raises ``ValueError`` (the right answer there) and its result otherwise."""
    def wrapped(*args):
        try:
            return fn(*args)
        except ValueError:
            return _REFUSED

    wrapped.__name__ = getattr(fn, "__name__", repr(fn))
    return wrapped
