"""Checkers for chapter 1's exercises: the two abilities, and backward transfer.

- Exercise 1.1, :func:`check_knowledge_score`: knowledge as the ranking accuracy of the gold
  answer among candidates, scored after the plain statement
  (reference: :func:`ivedu.evaluation.knowledge_score`).
- Exercise 1.2, :func:`check_instruction_exact_match`: instruction following as exact match
  of the greedy answer under every instruction phrasing
  (reference: :func:`ivedu.evaluation.exact_match_score`, the exact match of
  :func:`ivedu.evaluation.instruction_following_score`).
- Exercise 1.3, :func:`check_abilities`: both scores of one task in the profile's prompt
  format, on the fine-tuned model of the chapter (references:
  :func:`ivedu.evaluation.exact_match_score`, :func:`ivedu.evaluation.knowledge_score`).
- Exercise 1.4, :func:`check_backward_transfer`: BWT of an ``R`` matrix in the GEM convention
  (reference: :func:`ivedu.metrics.backward_transfer`).

Exercises 1.1 to 1.3 score a model, so their checks run on the tiny model and a damaged copy
(exactly) and then on the chapter's own model under study and tasks when the chapter passes
them, within one example (:func:`ivedu.exercises.one_in`); exercise 1.4 is arithmetic on a matrix and is
the same check on every profile.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ivedu.evaluation import exact_match_score, knowledge_score
from ivedu.exercises import (Case, check_against_reference, first_examples, one_in, passed, perturbed_tiny_model,
                             tiny_model, tiny_study, tiny_world)
from ivedu.metrics import backward_transfer
from ivedu.prompts import TINY_FORMAT
from ivedu.study import ModelUnderStudy


def _model_cases(task_names: tuple[str, ...], split: str = "test") -> list[Case]:
    """The shipped tiny model and a damaged copy (which makes mistakes), on each named task."""
    world = tiny_world()
    cases = []
    for label, (model, tokenizer) in (("the tiny model", tiny_model()), ("a damaged tiny model", perturbed_tiny_model())):
        for name in task_names:
            cases.append(Case(f"with {label} on the {name!r} task, {split} split",
                              (model, tokenizer, world.task(name), split)))
    return cases


def _on_chapter_model(learner: Callable, reference: Callable, lm: ModelUnderStudy, tasks, split: str, hint: str,
                      extra: tuple = (), items_per_example: Callable = lambda task: 1,
                      examples: int | None = None) -> int:
    """Check ``learner`` against ``reference`` on the chapter's model under study ``lm``, for up to
    two of ``tasks`` cut to their first ``examples`` examples (default:
    :func:`ivedu.exercises.first_examples`'s), each called with ``(lm.model, lm.tokenizer, task,
    split, *extra)`` and compared within one of its scored items (``items_per_example(task)`` per
    example). Returns the number of cases checked."""
    n = 0
    for task in list(tasks)[:2]:
        cut = first_examples(task) if examples is None else first_examples(task, examples)
        examples = len(cut.split(split))
        n += check_against_reference(
            learner, reference,
            [Case(f"with the chapter's model on the {task.name!r} task, {split} split (its first {examples} "
                  "examples)", (lm.model, lm.tokenizer, cut, split, *extra))],
            hint=hint, atol=one_in(examples * items_per_example(cut)), rtol=0.0)
    return n


# Knowledge is teacher-forced (no generation), so its check on the chapter's model affords twice
# the examples: a mean per token differs from the sum only where candidates differ in length, on
# a few examples in twenty (SmolLM2's antonyms: 3 of the first 24).
KNOWLEDGE_EXAMPLES = 24

KNOWLEDGE_HINT = ("score every candidate with answer_logprobs(model, tokenizer, prompts, answers) after "
                  "statement_prompt(task, example.input) -- the statement, not the instruction: knowledge is "
                  "measured without one -- and count an example correct when candidates[0] scores strictly "
                  "above all the others. The score is the candidate's *summed* log-probability: on a real "
                  "tokenizer candidates have different numbers of tokens, so a mean per token ranks them "
                  "differently.")


def _knowledge_reference(study: Callable) -> Callable:
    """Exercise 1.1's reference on the model ``study(model)`` makes a model under study of."""
    def reference(model, tokenizer, task, split):
        return knowledge_score(study(model), task, split).ranking_accuracy

    return reference


def check_knowledge_score(knowledge_ranking: Callable, lm: ModelUnderStudy | None = None, tasks=(),
                          split: str = "test") -> None:
    """Exercise 1.1: ``knowledge_ranking(model, tokenizer, task, split) -> float``.

    The share of ``task.split(split)``'s examples whose gold answer (``example.candidates[0]``)
    gets a strictly higher summed log-probability than every other candidate, each scored
    after ``statement_prompt(task, example.input)``. Checked exactly on the tiny model and a
    damaged copy, then on the chapter's model under study ``lm`` for up to two of ``tasks``
    (their first examples), within one example: a real model's near-ties may fall either way
    when the learner batches the candidates differently.
    """
    n = check_against_reference(knowledge_ranking, _knowledge_reference(tiny_study),
                                _model_cases(("sentiment", "first", "antonym")), hint=KNOWLEDGE_HINT)
    if lm is not None:
        n += _on_chapter_model(knowledge_ranking, _knowledge_reference(lm.with_model), lm, tasks, split,
                               KNOWLEDGE_HINT, examples=KNOWLEDGE_EXAMPLES)
    passed("knowledge score", f"{n} task/model pairs match ivedu.evaluation.knowledge_score")


EXACT_MATCH_HINT = ("build one prompt per example and per phrasing, instructed_prompt(task, example.input, phrasing, "
                    "fmt) for phrasing in range(len(task.instructions)) -- in the chapter's format fmt: a chat model "
                    "asked in another format answers something else --, generate with greedy_generate, enough new "
                    "tokens for the longest answer (len(answer_ids(tokenizer, prompt, gold)) + 1: count the answer's "
                    "tokens, not its words -- a real tokenizer splits a word into several) and stop=fmt.stop (where "
                    "the format ends an answer), and compare with evaluation.exact_match, which ignores extra spaces "
                    "and a final full stop.")


def check_instruction_exact_match(instruction_exact_match: Callable, lm: ModelUnderStudy | None = None, tasks=(),
                                  split: str = "test") -> None:
    """Exercise 1.2: ``instruction_exact_match(model, tokenizer, task, split, fmt) -> float``.

    Exact match (:func:`ivedu.evaluation.exact_match`) of the greedy answer to
    ``instructed_prompt(task, example.input, phrasing, fmt)``, averaged over every example of
    the split *and* every instruction phrasing of the task. Checked exactly on the tiny model
    and a damaged copy (tiny format), then on the chapter's model under study ``lm`` (called
    with its model, tokenizer and format) for up to two of ``tasks`` (their first examples),
    within one answer. A chat model prompted in the tiny model's plain format answers almost
    nothing right (SmolLM2: none of the first eight capitalize or sentiment examples), so the
    chapter's case is where a prompt built without ``fmt`` shows.
    """
    def reference(model, tokenizer, task, split, fmt):
        return exact_match_score(ModelUnderStudy(model, tokenizer, fmt), task, split)

    n = check_against_reference(instruction_exact_match, reference,
                                [Case(c.label, c.args + (TINY_FORMAT,)) for c in _model_cases(("antonym", "capital",
                                                                                                "first"))],
                                hint=EXACT_MATCH_HINT)
    if lm is not None:
        n += _on_chapter_model(instruction_exact_match, reference, lm, tasks, split, EXACT_MATCH_HINT,
                               extra=(lm.fmt,), items_per_example=lambda task: len(task.instructions))
    passed("instruction-following exact match", f"{n} task/model pairs match ivedu.evaluation's exact match "
                                                 "under every phrasing")


def abilities_reference(model, tokenizer, task, split, fmt) -> dict[str, float]:
    """Exercise 1.3's reference: ``{"instruction_following": exact match under every phrasing,
    "knowledge": ranking accuracy after the statement}`` of ``task.split(split)``."""
    lm = ModelUnderStudy(model, tokenizer, fmt)
    return {"instruction_following": exact_match_score(lm, task, split),
            "knowledge": knowledge_score(lm, task, split).ranking_accuracy}


ABILITIES_HINT = (
    "instruction following: one prompt per example and phrasing, instructed_prompt(task, ex.input, p, fmt) for p "
    "in range(len(task.instructions)); greedy answers with ivedu.evaluation.greedy_answers(ModelUnderStudy(model, "
    "tokenizer, fmt), prompts, golds) (one token past the longest gold answer, cut where fmt ends an answer); the "
    "share that ivedu.evaluation.exact_match counts as right -- it compares normalise_answer(answer), so a final "
    "full stop or extra spaces do not count against a chat model. Knowledge: no instruction and no fmt -- each candidate's summed log-probability after "
    "statement_prompt(task, ex.input) (answer_logprobs), correct when candidates[0] scores strictly above every "
    "other candidate.")


def check_abilities(abilities: Callable, lm: ModelUnderStudy | None = None, tasks=(), split: str = "test") -> None:
    """Exercise 1.3: ``abilities(model, tokenizer, task, split, fmt) -> {"instruction_following":
    float, "knowledge": float}``.

    Checked exactly on the tiny model and a damaged copy (tiny format), then on ``lm`` -- the
    chapter's fine-tuned model under study, on any profile -- for up to three of ``tasks`` in
    ``lm.fmt``, within one example (:func:`ivedu.exercises.one_in`): a real model's near-ties may
    fall either way when the batching differs.
    """
    n = check_against_reference(abilities, abilities_reference,
                                [Case(c.label, c.args + (TINY_FORMAT,)) for c in _model_cases(("capital", "antonym"))],
                                hint=ABILITIES_HINT)
    for task in list(tasks)[:3]:
        examples = len(task.split(split))
        n += check_against_reference(
            abilities, abilities_reference,
            [Case(f"with the chapter's model on the {task.name!r} task, {split} split ({examples} examples)",
                  (lm.model, lm.tokenizer, task, split, lm.fmt))], hint=ABILITIES_HINT, atol=one_in(examples),
            rtol=0.0)
    passed("both abilities", f"{n} task/model pairs match ivedu.evaluation's exact match and knowledge score")


def _r_matrices() -> list[Case]:
    """R matrices of 1 to 5 tasks, with forgetting, with gains and with scores above the diagonal."""
    rng = np.random.default_rng(0)
    cases = [Case("on R = [[0.8]] (one task: nothing to forget)", (np.array([[0.8]]),)),
             Case("on a 3-task R with forgetting",
                  (np.array([[0.9, 0.1, 0.0], [0.6, 0.95, 0.2], [0.5, 0.7, 1.0]]),)),
             Case("on a 2-task R where the first task improves", (np.array([[0.5, 0.3], [0.7, 0.9]]),))]
    for T in (4, 5):
        cases.append(Case(f"on a random {T}-task R", (rng.uniform(0, 1, (T, T)).round(2),)))
    return cases


def check_backward_transfer(backward_transfer_gem: Callable) -> None:
    """Exercise 1.4: ``backward_transfer_gem(R) -> float``, BWT in the GEM convention.

    ``R[t, i]`` is the score on task ``i`` after training stage ``t``;
    ``BWT = 1/(T-1) * sum_{i < T-1} (R[T-1, i] - R[i, i])``, and 0 with one task.

    Profile-independent: BWT is arithmetic on the matrix of scores, whatever model produced
    them, so the check takes no model -- fixed matrices exercise every rule (one task, gains,
    scores above the diagonal) that the chapter's ``R`` could, and a profile's ``R`` adds none.
    """
    n = check_against_reference(
        backward_transfer_gem, lambda R: backward_transfer(R, "gem"), _r_matrices(),
        hint="compare each task's final score R[-1, i] with its score right after its own stage R[i, i], "
             "for every task but the last, and divide by T - 1 (the GEM convention; dividing by T is "
             "TRACE's). With a single task there is nothing to forget: return 0.")
    passed("backward transfer (GEM)", f"{n} R matrices match ivedu.metrics.backward_transfer")
