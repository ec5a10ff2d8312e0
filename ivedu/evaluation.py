"""The two abilities the paper separates, measured per task.

- **Knowledge** ``P(y | x)``: the answer's likelihood in the task's plain statement, with no
  instruction ("the capital of peru is" -> "lima"), ranked against wrong answers of the
  same kind.
- **Instruction following** ``P(y^c | c, x)``: greedy generation under the instruction,
  scored by exact match, plus the teacher-forced probability of the conformant answer.
  Its in-context (few-shot) variant states the task by demonstrations instead of an
  instruction (:func:`in_context_score`).

:func:`score_abilities` measures all three on many tasks at once, with an optional progress bar.

Every score takes the model under study, ``lm`` (:class:`ivedu.study.ModelUnderStudy`: the
model, its tokenizer and its prompt format): prompts are written in ``lm.fmt`` and greedy
answers end at its stop strings. (The class is not imported here: :mod:`ivedu.study` scores
known examples with this module.)
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from ivedu.arguments import check_int, check_ints, check_optional_positive_int, check_prompts, check_seed, check_strs
from ivedu.generation import answer_logprobs, forced_greedy, greedy_generate, last_token_logits
from ivedu.mediation import first_answer_tokens
from ivedu.prompts import PromptFormat, answer_ids, fewshot_prompt, instructed_prompt, statement_prompt
from ivedu.world import SPLITS, Example, Task


@dataclass(frozen=True)
class InstructionScore:
    """Instruction following on one task: means over examples and instruction phrasings.

    ``starts_right``: the share of answers whose first token is right but whose whole answer is
    not (what first-token accuracy credits beyond exact match); ``balanced``: exact match
    averaged over the distinct gold answers (:func:`balanced_accuracy`; ``None`` for tasks with
    many), on which answering one label to everything scores ``1 / n_labels``."""

    task: str
    n: int
    exact_match: float
    first_token_accuracy: float
    answer_prob: float
    starts_right: float = float("nan")
    balanced: float | None = None


@dataclass(frozen=True)
class KnowledgeScore:
    """Knowledge of one task in statement form: gold-answer ranking and probability."""

    task: str
    n: int
    ranking_accuracy: float
    gold_prob: float


# Sentence punctuation a chat model ends a one-word answer with ("Laugh." for "Laugh").
_TRAILING = ".!?"


def normalise_answer(text: str) -> str:
    """``text`` as exact match compares it: whitespace collapsed, trailing ``.``, ``!`` and
    ``?`` dropped.

    A chat model writes a one-word answer as a sentence would end ("Laugh."); the authors'
    scoring post-processes each answer before comparing it (:mod:`ivedu` follows the
    minimal form of that step), and the punctuation is not the task. Case is kept: a
    capitalisation task's answer differs from its input only in case.
    """
    return " ".join(text.split()).rstrip(_TRAILING).rstrip()


def exact_match(predictions: Sequence[str], golds: Sequence[str]) -> list[bool]:
    """Equality of the normalised answers (:func:`normalise_answer`), one flag per prediction."""
    check_strs("predictions", predictions, nonempty=False)
    check_strs("golds", golds, nonempty=False)
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers: give one per gold answer")
    return [normalise_answer(p) == normalise_answer(g) for p, g in zip(predictions, golds)]


# Above this many distinct gold answers, balanced accuracy means nothing (:func:`balanced_accuracy`).
FEW_ANSWERS = 10


def balanced_accuracy(predictions: Sequence[str], golds: Sequence[str]) -> float | None:
    """Mean over the distinct gold answers of each answer's exact-match recall, in [0, 1].

    A predictor that always gives one of the gold answers scores ``1 / n_answers``, however
    skewed the golds are. ``None`` when there are more than :data:`FEW_ANSWERS` distinct
    golds: on an open-ended task (a country's capital) each answer has one or two examples
    and the mean of their recalls is just exact match, noisier."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers")
    if not golds:
        raise ValueError("no gold answers given")
    hits: dict[str, list[bool]] = {}
    for p, g in zip(predictions, golds):
        gold = normalise_answer(g)
        hits.setdefault(gold, []).append(normalise_answer(p) == gold)
    if len(hits) > FEW_ANSWERS:
        return None
    return sum(sum(h) / len(h) for h in hits.values()) / len(hits)


def starts_right_share(first_token_right: Sequence[bool], exact: Sequence[bool]) -> float:
    """Share of answers whose first token is right but whose whole answer is not: what the
    first-token metric credits and exact match does not."""
    if len(first_token_right) != len(exact):
        raise ValueError(f"{len(first_token_right)} first-token flags for {len(exact)} exact-match flags")
    if not exact:
        raise ValueError("no answers given")
    return sum(bool(f) and not bool(e) for f, e in zip(first_token_right, exact)) / len(exact)


def first_token_accuracy(lm, prompts: Sequence[str], golds: Sequence[str]) -> list[bool]:
    """Whether the most likely next token is the gold answer's first token, per prompt."""
    logits = last_token_logits(lm.model, lm.tokenizer, prompts)
    firsts = first_answer_tokens(lm.tokenizer, prompts, golds)
    return (logits.argmax(-1) == firsts).tolist()


def known_examples(lm, task: Task, phrasing: int = 0) -> Task:
    """``task`` cut to the examples the model answers correctly under its instruction, in every split.

    Todd et al. and the authors' code score a real model, and extract its vectors, only on
    the queries it gets right with the clean prompt: forgetting is then the loss of what the
    model could do before fine-tuning, and a head's effect is measured where the task is
    actually carried out, not blurred by inputs the model never knew. "Correct" is greedy
    exact match under the instruction (``phrasing``), the score forgetting is measured with.
    Todd et al. keep a query when the gold answer's first token comes first; on a chat model
    that credits echoing the input (``spoon`` -> ``spoon``, the first token of ``spoons``:
    ``python -m ivedu.experiments task_survey`` measures how often), so ivedu asks for the
    whole answer. The split sizes of the result say how many remain (``len(known.test)``);
    ``ValueError`` when none remain.
    """
    kept: dict[str, tuple[Example, ...]] = {}
    for split in SPLITS:
        examples = task.split(split)
        prompts = [instructed_prompt(task, ex.input, phrasing, lm.fmt) for ex in examples]
        right = _greedy_exact_match(lm, prompts, [ex.output for ex in examples]) if examples else []
        kept[split] = tuple(ex for ex, ok in zip(examples, right) if ok)
    if not any(kept.values()):
        raise ValueError(f"the model answers none of task {task.name!r}'s examples correctly under its instruction; "
                         "choose a task it can do, or score it without filtering")
    return replace(task, **kept)


def split_sizes(task: Task) -> dict[str, int]:
    """How many examples each split of ``task`` holds: ``{"train": .., "valid": .., "test": ..}``."""
    return {split: len(task.split(split)) for split in SPLITS}


@dataclass(frozen=True)
class TaskSurvey:
    """What a model does with one task's instructed prompts, and what each criterion credits.

    ``first_token``: the next token is the gold answer's first token (Todd et al.'s criterion
    of a known example); ``exact_match``: the greedy answer is the gold answer
    (:func:`exact_match`, the criterion of :func:`known_examples`); ``copies``: the greedy answer is the input itself, letter for letter (spaces
    ignored; case kept, since a capitalisation task's answer differs from its input only in case);
    ``first_token_only``: credited by the first token but not by exact match -- high when
    answers begin like their inputs (``spoon`` -> ``spoons``) and the model echoes the input.
    Each a share of ``n`` examples of ``split`` under instruction phrasing 0.
    """

    task: str
    split: str
    n: int
    first_token: float
    exact_match: float
    copies: float
    first_token_only: float


def survey_task(lm, task: Task, split: str = "test", n: int | None = None) -> TaskSurvey:
    """:class:`TaskSurvey` of ``task`` on the first ``n`` examples of ``split`` (all: ``None``).

    Which tasks a model can do under its instruction decides a profile's general tasks; the
    first-token rule alone can credit a model that repeats its input, so the survey reports
    exact match and copying beside it.
    """
    check_optional_positive_int("n", n)
    examples = list(task.split(split))[:n]
    if not examples:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r}")
    prompts = [instructed_prompt(task, ex.input, 0, lm.fmt) for ex in examples]
    golds = [ex.output for ex in examples]
    first = first_token_accuracy(lm, prompts, golds)
    predictions = greedy_answers(lm, prompts, golds)
    em = exact_match(predictions, golds)
    copies = [" ".join(p.split()) == " ".join(ex.input.split()) for p, ex in zip(predictions, examples)]
    return TaskSurvey(task.name, split, len(examples), _mean(first), _mean(em), _mean(copies),
                      _mean([f and not e for f, e in zip(first, em)]))


def instruction_following_score(lm, task: Task, split: str = "heldout",
                                phrasings: Sequence[int] | None = None) -> InstructionScore:
    """Exact match, first-token accuracy and answer probability under the task's instructions,
    prompts in ``lm.fmt`` (a chat model's from :func:`ivedu.prompts.chat_format`)."""
    prompts, golds = instructed_prompts(task, split, phrasings, fmt=lm.fmt)
    return _generation_score(lm, task.name, prompts, golds)


def instructed_prompts(task: Task, split: str, phrasings: Sequence[int] | None = None,
                       *, fmt: PromptFormat) -> tuple[list[str], list[str]]:
    """Every example of ``split`` under each phrasing (default: all), phrasing by phrasing,
    and the gold answers in the same order: the prompts instruction following is scored on."""
    if phrasings is not None:
        check_ints("phrasings", phrasings, 0, len(task.instructions) - 1)
    examples = task.split(split)
    if not examples:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r}")
    phrasings = range(len(task.instructions)) if phrasings is None else phrasings
    return ([instructed_prompt(task, ex.input, p, fmt) for p in phrasings for ex in examples],
            [ex.output for _ in phrasings for ex in examples])


def exact_match_score(lm, task: Task, split: str = "heldout", phrasings: Sequence[int] | None = None) -> float:
    """The exact match of :func:`instruction_following_score` alone: what the stop rule, the
    ``R`` matrix and the general-task scores need, without its first-token and answer-probability
    passes (on a real model, each as costly as a generation step)."""
    prompts, golds = instructed_prompts(task, split, phrasings, fmt=lm.fmt)
    return _mean(_greedy_exact_match(lm, prompts, golds))


def greedy_answers(lm, prompts: Sequence[str], golds: Sequence[str]) -> list[str]:
    """Greedy answers to ``prompts``, one token longer than the longest gold answer: long
    enough to be right, and to show a wrong answer that merely starts right; each cut where
    ``lm.fmt`` ends an answer (:attr:`ivedu.prompts.PromptFormat.stop`).

    An answer that greedy decoding provably gets right is read from one teacher-forced pass over
    prompt and gold (:func:`ivedu.generation.forced_greedy`); only the others are decoded. The
    answers are those of decoding every prompt (:func:`_decoded_answers`)."""
    return _greedy_pass(lm, prompts, golds).answers


@dataclass(frozen=True)
class _GreedyPass:
    """Greedy answers, and (when asked for) first-token hits ``first`` and answer probabilities
    ``probs`` ``[n]``, for one list of prompts and gold answers."""

    answers: list[str]
    first: list[bool] | None = None
    probs: torch.Tensor | None = None


def _greedy_pass(lm, prompts: Sequence[str], golds: Sequence[str], scores: bool = False) -> _GreedyPass:
    """:class:`_GreedyPass` of ``prompts``: greedy answers and, with ``scores``, first-token hits
    (:func:`first_token_accuracy`) and teacher-forced answer probabilities (:func:`answer_logprobs`).

    One teacher-forced pass over each prompt and its gold answer gives all three where it decides
    them (:func:`ivedu.generation.forced_greedy`): the probability always, the first token unless
    its best two logits nearly tie, the greedy answer where greedy decoding writes the gold's
    tokens. The rest -- wrong answers, near ties, a right text through other tokens -- are decoded
    (the first tokens of near ties read from the prompt alone), so every value is the one the
    separate computations give (:func:`_generation_score_by_decoding`). A model with hooks on it
    (a steering that acts at the last position would act elsewhere in a teacher-forced pass) or in
    training mode (dropout) is decoded throughout."""
    check_prompts(prompts, golds, "golds")
    firsts = first_answer_tokens(lm.tokenizer, prompts, golds) if scores else None
    max_new = _max_new_tokens(lm, prompts, golds)
    if lm.model.training or _has_hooks(lm.model):
        answers = greedy_generate(lm.model, lm.tokenizer, prompts, max_new_tokens=max_new, stop=lm.fmt.stop)
        if not scores:
            return _GreedyPass(answers)
        first = last_token_logits(lm.model, lm.tokenizer, prompts).argmax(-1)
        return _GreedyPass(answers, (first == firsts).tolist(),
                           answer_logprobs(lm.model, lm.tokenizer, prompts, golds).exp())
    forced = forced_greedy(lm.model, lm.tokenizer, prompts, golds, max_new, stop=lm.fmt.stop, logprobs=scores)
    answers = list(forced.answers)
    redo = [i for i, a in enumerate(answers) if a is None]
    if redo:
        again = greedy_generate(lm.model, lm.tokenizer, [prompts[i] for i in redo], max_new_tokens=max_new,
                                stop=lm.fmt.stop)
        for i, a in zip(redo, again):
            answers[i] = a
    if not scores:
        return _GreedyPass(answers)
    first = list(forced.first)
    unsure = [i for i, f in enumerate(first) if f is None]
    if unsure:
        logits = last_token_logits(lm.model, lm.tokenizer, [prompts[i] for i in unsure])
        for i, token in zip(unsure, logits.argmax(-1).tolist()):
            first[i] = token
    return _GreedyPass(answers, [f == int(g) for f, g in zip(first, firsts)], forced.logprobs.exp())


def _max_new_tokens(lm, prompts: Sequence[str], golds: Sequence[str]) -> int:
    """The longest gold answer's token count plus one: how far :func:`greedy_answers` decodes."""
    return max(len(answer_ids(lm.tokenizer, p, g)) for p, g in zip(prompts, golds)) + 1


def _has_hooks(model: torch.nn.Module) -> bool:
    """Whether a forward hook or pre-hook is registered on any module of ``model``, or on every module."""
    if _global_forward_hooks or _global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _decoded_answers(lm, prompts: Sequence[str], golds: Sequence[str]) -> list[str]:
    """:func:`greedy_answers` by decoding every prompt: what the teacher-forced pass is tested
    and benchmarked against."""
    check_prompts(prompts, golds, "golds")
    return greedy_generate(lm.model, lm.tokenizer, prompts, max_new_tokens=_max_new_tokens(lm, prompts, golds),
                           stop=lm.fmt.stop)


def _greedy_exact_match(lm, prompts: Sequence[str], golds: Sequence[str]) -> list[bool]:
    """Whether each greedy answer (:func:`greedy_answers`) is the gold answer."""
    return exact_match(greedy_answers(lm, prompts, golds), golds)


def _generation_score(lm, name: str, prompts: Sequence[str], golds: Sequence[str]) -> InstructionScore:
    """Exact match of greedy answers, first-token accuracy and teacher-forced answer probability,
    from one teacher-forced pass where it decides them (:func:`_greedy_pass`)."""
    run = _greedy_pass(lm, prompts, golds, scores=True)
    em = exact_match(run.answers, golds)
    return InstructionScore(name, len(prompts), _mean(em), _mean(run.first), float(run.probs.mean()),
                            starts_right_share(run.first, em), balanced_accuracy(run.answers, golds))


def _generation_score_by_decoding(lm, name: str, prompts: Sequence[str], golds: Sequence[str]) -> InstructionScore:
    """:func:`_generation_score` by its three separate computations: decoding every prompt, a pass
    for the first token, a teacher-forced pass for the probability (what the one pass is tested
    and benchmarked against)."""
    predictions = _decoded_answers(lm, prompts, golds)
    em = exact_match(predictions, golds)
    ft = first_token_accuracy(lm, prompts, golds)
    prob = answer_logprobs(lm.model, lm.tokenizer, prompts, golds).exp()
    return InstructionScore(name, len(prompts), _mean(em), _mean(ft), float(prob.mean()),
                            starts_right_share(ft, em), balanced_accuracy(predictions, golds))


def demonstrations(task: Task, query: Example, k: int, seed: int = 0) -> list[Example]:
    """``k`` demonstrations for ``query`` from ``task``'s train split, deterministic.

    Drawn with a ``random.Random`` seeded by ``seed``, the task's name and the query's input,
    so every query gets its own demonstrations and the same ones on every call, whatever
    the order or batching of the queries.
    """
    check_int("k", k, 0)
    check_seed("seed", seed)
    pool = [ex for ex in task.train if ex.input != query.input]
    return random.Random(f"{seed}:{task.name}:{query.input}").sample(pool, min(k, len(pool)))


def in_context_score(lm, task: Task, split: str = "heldout", k: int = 4, seed: int = 0) -> InstructionScore:
    """Instruction following stated by ``k`` demonstrations instead of an instruction.

    Prompts are :func:`ivedu.prompts.fewshot_prompt` (``input : x output : y ; ... input : q
    output :``) with demonstrations from the train split (:func:`demonstrations`); scored
    like :func:`instruction_following_score` (the FV paper's in-context "IP" setting).
    """
    check_int("k", k, 0)
    check_seed("seed", seed)
    examples = task.split(split)
    if not examples:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r}")
    prompts = [fewshot_prompt(demonstrations(task, ex, k, seed), ex.input, lm.fmt) for ex in examples]
    return _generation_score(lm, task.name, prompts, [ex.output for ex in examples])


def knowledge_score(lm, task: Task, split: str = "heldout") -> KnowledgeScore:
    """Ranking accuracy of the gold answer among the example's candidates, statement format.

    Each candidate is scored by the summed log-probability of its tokens after the statement
    prefix; the gold answer must score strictly highest. The statement is plain text in every
    format: knowledge is probed with no instruction at all.
    """
    examples = task.split(split)
    if not examples:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r}")
    prompts, answers = [], []
    for ex in examples:
        for c in ex.candidates:
            prompts.append(statement_prompt(task, ex.input))
            answers.append(c)
    scores = answer_logprobs(lm.model, lm.tokenizer, prompts, answers)
    correct, gold_probs, start = [], [], 0
    for ex in examples:
        k = len(ex.candidates)
        s = scores[start:start + k]
        correct.append(bool((s[0] > s[1:]).all()))
        gold_probs.append(float(s[0].exp()))
        start += k
    return KnowledgeScore(task.name, len(examples), _mean(correct), _mean(gold_probs))


def _mean(xs: Sequence[float | bool]) -> float:
    return float(sum(xs)) / len(xs) if len(xs) else float("nan")


@dataclass(frozen=True)
class TaskScores:
    """Both abilities on one task, side by side (one row of the chapters' tables)."""

    task: str
    exact_match: float
    first_token_accuracy: float
    answer_prob: float
    ranking_accuracy: float
    gold_prob: float


def score_tasks(lm, tasks: Sequence[Task], split: str = "heldout") -> list[TaskScores]:
    """Instruction following (prompts in ``lm.fmt``) and knowledge of each task on ``split``."""
    rows = []
    for task in tasks:
        ifs = instruction_following_score(lm, task, split)
        kn = knowledge_score(lm, task, split)
        rows.append(TaskScores(task.name, ifs.exact_match, ifs.first_token_accuracy, ifs.answer_prob,
                               kn.ranking_accuracy, kn.gold_prob))
    return rows


def format_scores(rows: Sequence[TaskScores]) -> str:
    """A plain-text table of :func:`score_tasks` rows, with a mean row."""
    header = f"{'task':<12}{'exact match':>12}{'first token':>12}{'P(answer)':>11}{'ranking':>9}{'P(gold)':>9}"
    lines = [header, "-" * len(header)]
    fields = ("exact_match", "first_token_accuracy", "answer_prob", "ranking_accuracy", "gold_prob")
    widths = (12, 12, 11, 9, 9)
    for row in rows:
        lines.append(f"{row.task:<12}" + "".join(f"{getattr(row, f):>{w}.2f}" for f, w in zip(fields, widths)))
    means = [sum(getattr(r, f) for r in rows) / len(rows) for f in fields]
    lines.append("-" * len(header))
    lines.append(f"{'mean':<12}" + "".join(f"{m:>{w}.2f}" for m, w in zip(means, widths)))
    return "\n".join(lines)


@dataclass(frozen=True)
class AbilityScores:
    """All three measurements on one task (a row of chapter 1's tables); every field in [0, 1].

    ``if_*``: zero-shot under the instruction; ``icl_*``: in-context, ``k`` demonstrations;
    ``kn_*``: knowledge in statement form. ``*_exact_match`` and ``kn_ranking`` are accuracies,
    ``*_prob`` mean probabilities of the gold answer (teacher forced). The shortcut controls of
    the zero-shot score: ``if_first_token`` (first-token accuracy, beside exact match),
    ``if_starts_right`` (answers that only start right) and ``if_balanced`` (balanced accuracy,
    ``None`` for tasks with many distinct answers); NaN or ``None`` in results made before them.
    """

    task: str
    if_exact_match: float
    if_answer_prob: float
    icl_exact_match: float
    icl_answer_prob: float
    kn_ranking: float
    kn_gold_prob: float
    if_first_token: float = float("nan")
    if_starts_right: float = float("nan")
    if_balanced: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


ABILITY_FIELDS = ("if_exact_match", "if_answer_prob", "icl_exact_match", "icl_answer_prob",
                  "kn_ranking", "kn_gold_prob")


def score_abilities(lm, tasks: Sequence[Task], split: str = "heldout", k: int = 4, seed: int = 0,
                    progress: bool = False) -> list[AbilityScores]:
    """Instruction following (zero-shot and ``k``-shot) and knowledge of each task on ``split``.

    ``k=0`` skips the in-context score (its fields are NaN): it is the slowest of the three,
    its prompts being several times longer. ``progress=True`` shows a progress bar over the
    tasks (on stderr). ``lm.fmt`` formats the instructed and few-shot prompts; the knowledge
    probe is a plain statement in every format.
    """
    rows = []
    nan = float("nan")
    for task in _progress(tasks, progress, "scoring tasks"):
        zero = instruction_following_score(lm, task, split)
        icl = in_context_score(lm, task, split, k, seed) if k > 0 else None
        kn = knowledge_score(lm, task, split)
        rows.append(AbilityScores(task.name, zero.exact_match, zero.answer_prob,
                                  icl.exact_match if icl else nan, icl.answer_prob if icl else nan,
                                  kn.ranking_accuracy, kn.gold_prob, zero.first_token_accuracy, zero.starts_right,
                                  zero.balanced))
    return rows


def mean_abilities(rows: Sequence[AbilityScores]) -> dict[str, float]:
    """The mean of each :class:`AbilityScores` field over tasks."""
    return {f: _mean([getattr(r, f) for r in rows]) for f in ABILITY_FIELDS}


def format_abilities(before: Sequence[AbilityScores | dict], after: Sequence[AbilityScores | dict]) -> str:
    """A plain-text before -> after table of both abilities per task, with a mean row.

    Rows are :class:`AbilityScores` or their dicts (:meth:`AbilityScores.as_dict`), in the
    same task order before and after.
    """
    before = [AbilityScores(**r) if isinstance(r, dict) else r for r in before]
    after = [AbilityScores(**r) if isinstance(r, dict) else r for r in after]
    fields = (("if_exact_match", "IF exact"), ("icl_exact_match", "ICL exact"), ("kn_ranking", "KN ranking"),
              ("kn_gold_prob", "KN P(gold)"))
    header = f"{'task':<12}" + "".join(f"{name:>17}" for _, name in fields)
    lines = [header, f"{'':<12}" + "".join(f"{'before -> after':>17}" for _ in fields), "-" * len(header)]
    if len(before) != len(after):
        raise ValueError(f"{len(before)} rows before but {len(after)} after")
    for b, a in zip(before, after):
        if b.task != a.task:
            raise ValueError(f"rows do not match: {b.task!r} before, {a.task!r} after")
        lines.append(f"{b.task:<12}" + "".join(f"{getattr(b, f):>9.2f} -> {getattr(a, f):.2f}" for f, _ in fields))
    mb, ma = mean_abilities(before), mean_abilities(after)
    lines.append("-" * len(header))
    lines.append(f"{'mean':<12}" + "".join(f"{mb[f]:>9.2f} -> {ma[f]:.2f}" for f, _ in fields))
    return "\n".join(lines)


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False, mininterval=1.0)
