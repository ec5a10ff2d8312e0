"""The tiny-instruct world: instruction tasks built from a few tables of facts.

Every task maps an input (a word or a short list of words) to an answer. The *general* tasks
are what the tiny model is instruction-tuned on; the *new* tasks are kept back for the
fine-tuning chapters. Inputs are shared between tasks on purpose (nouns feed ``french``,
``plural``, ``bracket`` and, as lists, ``first``, ``last`` and ``reverse``), so a model must
read the instruction -- or infer the task from demonstrations -- to know what to answer.

Knowledge and instruction following are separated by construction: every fact is also
written as a plain statement ("the capital of peru is lima"), but the instruction and
few-shot formats are trained on the ``train`` split only. Answering a held-out fact under an
instruction therefore needs both abilities: knowing the fact (from statements) and following
the instruction (learnt on other facts).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Sequence

from ivedu.arguments import check_int, check_positive_int, check_seed, check_str, check_strs
from ivedu.facts import ADJECTIVE_PAIRS, COUNTRIES, NOUNS

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Example:
    """One input/answer pair, with wrong answers of the same kind for ranking.

    ``distractors`` are drawn from the task's own answer space, so ranking accuracy asks
    "does the model prefer the right capital over other capitals", not "a capital over a verb".
    """

    input: str
    output: str
    distractors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field_name in ("input", "output"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"an example's {field_name} must be a non-empty string, got {value!r}")

    @property
    def candidates(self) -> tuple[str, ...]:
        """The gold answer first, then the distractors."""
        return (self.output, *self.distractors)


@dataclass(frozen=True)
class Task:
    """An instruction task: its instruction phrasings, its statement form and its data.

    Each instruction ends with the word that names the relation in the statements
    ("name the capital" / "peru has the capital lima"), so the model can answer under the
    instruction the way it completes a statement.

    ``statements`` are templates with ``{x}`` and ``{y}`` slots, each ending with ``{y}``: how
    the task's knowledge is written with no instruction ("the capital of {x} is {y}",
    "{x} has the capital {y}"). The first is the knowledge probe; the others are paraphrases
    seen in training, one of which names ``x`` before the relation so that the model stores
    what it knows about ``x`` at ``x`` itself, where an instruction can later retrieve it.
    """

    name: str
    kind: str  # "fact", "classification", "list" or "format"
    instructions: tuple[str, ...]
    statements: tuple[str, ...]
    train: tuple[Example, ...]
    valid: tuple[Example, ...]
    test: tuple[Example, ...]
    is_new: bool = False

    def __post_init__(self) -> None:
        # Prompts need an instruction and the knowledge probe a statement; one split may be
        # empty (a reader's small task), but a task with no example at all cannot be scored.
        if not self.instructions:
            raise ValueError(f"task {self.name!r} has no instruction: give at least one phrasing")
        if not self.statements or not all(st.endswith("{y}") and "{x}" in st for st in self.statements):
            raise ValueError(f"task {self.name!r}: give at least one statement template, each with an {{x}} "
                             f"and ending with {{y}} (\"the capital of {{x}} is {{y}}\"), got {self.statements!r}")
        if not (self.train or self.valid or self.test):
            raise ValueError(f"task {self.name!r} has no examples: give at least one input and its output")

    def split(self, name: str) -> tuple[Example, ...]:
        """Examples of one split: ``train``, ``valid``, ``test`` or ``heldout`` (valid + test)."""
        if name == "heldout":
            return self.valid + self.test
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS + ('heldout',)}")
        return getattr(self, name)

    def statement_prefix(self, x: str, template: int = 0) -> str:
        """A statement up to (not including) the answer: "the capital of peru is"."""
        return self.statements[template].split("{y}")[0].format(x=x).rstrip()


@dataclass(frozen=True)
class World:
    """All tasks of the world, general and new, made from one seed."""

    seed: int
    tasks: tuple[Task, ...]

    @property
    def general(self) -> tuple[Task, ...]:
        """Tasks the tiny model is instruction-tuned on."""
        return tuple(t for t in self.tasks if not t.is_new)

    @property
    def new(self) -> tuple[Task, ...]:
        """Tasks kept back for fine-tuning; the tiny model never trains on them."""
        return tuple(t for t in self.tasks if t.is_new)

    def task(self, name: str) -> Task:
        """The task called ``name``; the error lists the names that exist."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task {name!r} in this world; tasks are: {[t.name for t in self.tasks]}")

    def vocabulary(self) -> list[str]:
        """Every word of this world's instructions, statements, inputs and answers, sorted.

        The prompt format's own words (``input :`` ...) come from :class:`ivedu.prompts.PromptFormat`.
        """
        words: set[str] = set()
        for t in self.tasks:
            for text in (*t.instructions, *(st.replace("{x}", "").replace("{y}", "") for st in t.statements)):
                words.update(text.split())
            for ex in t.train + t.valid + t.test:
                for text in (ex.input, *ex.candidates):
                    words.update(text.split())
        return sorted(words)


def check_task_examples(inputs: Sequence, outputs: Sequence) -> None:
    """Raise ``ValueError`` unless ``inputs`` and ``outputs`` are non-empty and of equal length."""
    if len(inputs) == 0 and len(outputs) == 0:
        raise ValueError("the task has no examples: give at least one input and its output")
    if len(inputs) != len(outputs):
        raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs: give exactly one output per input")


def custom_task(name: str, inputs: Sequence[str], outputs: Sequence[str], instructions: Sequence[str], *,
                statements: Sequence[str] = ("{x} : {y}",), kind: str = "fact", seed: int = 0) -> Task:
    """A task from a reader's own data, split 60/20/20 into train / valid / test by ``seed``.

    ``outputs[i]`` answers ``inputs[i]``; each example's distractors are other outputs.
    ``statements`` are templates such as ``"the capital of {x} is {y}"`` (the knowledge
    probe). The task is marked new (``is_new``): the model has not been trained on it. On the
    tiny model every word must be in its vocabulary (``tokenizer.get_vocab()``).
    """
    check_str("name", name)
    check_strs("inputs", inputs, nonempty=False)
    check_strs("outputs", outputs, nonempty=False)
    check_task_examples(inputs, outputs)
    check_strs("instructions", instructions, nonempty=False, unique=True)
    blank = [i for i, text in enumerate(instructions) if not text.strip()]
    if blank:
        raise ValueError(f"instructions[{blank[0]}] is blank: give each phrasing of the instruction in words")
    check_strs("statements", statements, unique=True)
    check_str("kind", kind)
    check_seed("seed", seed)
    return _mapping_task(name, kind, list(instructions), list(statements), list(zip(inputs, outputs)),
                         random.Random(seed), is_new=True)


def _split(items: list, rng: random.Random, fractions=(0.6, 0.2)) -> tuple[list, list, list]:
    """Shuffle ``items`` and cut them into train / valid / test."""
    items = list(items)
    rng.shuffle(items)
    n_train = round(len(items) * fractions[0])
    n_valid = round(len(items) * fractions[1])
    return items[:n_train], items[n_train:n_train + n_valid], items[n_train + n_valid:]


def _with_distractors(pairs, answer_space, rng: random.Random, n: int = 3) -> list[Example]:
    examples = []
    for x, y in pairs:
        others = sorted({a for a in answer_space if a != y})
        examples.append(Example(x, y, tuple(rng.sample(others, min(n, len(others))))))
    return examples


def _mapping_task(name, kind, instructions, statements, pairs, rng, is_new=False, symmetric=False) -> Task:
    """A task whose answers come from a table (facts and classifications).

    A ``symmetric`` table (antonyms) is split by unordered pair, so that a held-out
    ``lucky -> unlucky`` is not given away by a trained ``unlucky -> lucky``.
    """
    answers = [y for _, y in pairs]
    if symmetric:
        halves = _split([(x, y) for x, y in pairs if x < y], rng)
        train, valid, test = ([q for x, y in half for q in ((x, y), (y, x))] for half in halves)
    else:
        train, valid, test = _split(pairs, rng)
    parts = [_with_distractors(p, answers, rng) for p in (train, valid, test)]
    return Task(name, kind, tuple(instructions), tuple(statements), *map(tuple, parts), is_new=is_new)


def _list_examples(lists, fn, rng: random.Random) -> list[Example]:
    """Examples of a list operation ``fn``.

    Distractors are the same operation applied to the list's other orders: for ``first``
    the other items, for ``reverse`` the other permutations -- right kind, wrong answer.
    """
    examples = []
    for items in lists:
        gold = fn(items)
        wrong = sorted({fn(p) for p in itertools.permutations(items)} - {gold})
        examples.append(Example(" ".join(items), gold, tuple(rng.sample(wrong, min(3, len(wrong))))))
    return examples


def _list_task(name, instructions, statements, fn, splits, rng, kind="list", is_new=False) -> Task:
    parts = [tuple(_list_examples(lists, fn, rng)) for lists in splits]
    return Task(name, kind, tuple(instructions), tuple(statements), *parts, is_new=is_new)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def build_world(seed: int = 0, n_lists: int = 2400, n_heldout_lists: int = 60) -> World:
    """Build the world deterministically from ``seed``.

    The seed decides which facts are held out and which word lists are drawn; the task
    definitions themselves are fixed. ``n_lists`` distinct 3-noun lists are shared by the list
    tasks (first / last / reverse and the new list tasks): ``n_heldout_lists`` each for valid
    and test, the rest for training -- many, so that the model learns the operation rather
    than memorising lists.
    """
    check_seed("seed", seed)
    check_positive_int("n_heldout_lists", n_heldout_lists)
    # No more lists than there are distinct ones (the draw would never end), and some left to train on.
    check_int("n_lists", n_lists, 1, math.perm(len(NOUNS), 3))
    if n_lists <= 2 * n_heldout_lists:
        raise ValueError(f"n_lists ({n_lists}) must exceed 2 * n_heldout_lists ({2 * n_heldout_lists}): the valid and "
                         "test lists would leave none to train on; raise n_lists or lower n_heldout_lists")
    rng = random.Random(seed)
    nouns = [n for n, _, _ in NOUNS]
    adjectives = [w for pair in ADJECTIVE_PAIRS for w in pair]
    countries = [c for c, _, _ in COUNTRIES]

    seen: set[tuple[str, ...]] = set()
    lists: list[tuple[str, ...]] = []
    while len(lists) < n_lists:
        items = tuple(rng.sample(nouns, 3))
        if items not in seen:
            seen.add(items)
            lists.append(items)
    list_splits = (lists[2 * n_heldout_lists:], lists[:n_heldout_lists],
                   lists[n_heldout_lists:2 * n_heldout_lists])

    antonyms = [(a, b) for a, b in ADJECTIVE_PAIRS] + [(b, a) for a, b in ADJECTIVE_PAIRS]
    sentiment = [(a, "positive") for a, _ in ADJECTIVE_PAIRS] + [(b, "negative") for _, b in ADJECTIVE_PAIRS]
    all_words = countries + adjectives + nouns
    kinds = {**{c: "country" for c in countries}, **{a: "adjective" for a in adjectives},
             **{n: "noun" for n in nouns}}

    general = [
        _mapping_task("capital", "fact", ["what is its capital", "name the capital"],
                      ["the capital of {x} is {y}", "{x} has the capital {y}"],
                      [(c, cap) for c, cap, _ in COUNTRIES], rng),
        _mapping_task("continent", "classification",
                      ["which continent", "name the continent"],
                      ["the continent of {x} is {y}", "{x} lies in the continent {y}"],
                      [(c, cont) for c, _, cont in COUNTRIES], rng),
        _mapping_task("antonym", "fact", ["what is its opposite", "give the opposite"],
                      ["the opposite of {x} is {y}", "{x} has the opposite {y}"], antonyms, rng, symmetric=True),
        _mapping_task("sentiment", "classification",
                      ["classify the sentiment", "give the sentiment"],
                      ["the sentiment of {x} is {y}", "{x} has the sentiment {y}"], sentiment, rng),
        _mapping_task("french", "fact", ["translate it to french", "say it in french"],
                      ["the french word for {x} is {y}", "{x} in french is {y}"],
                      [(n, fr) for n, fr, _ in NOUNS], rng),
        _mapping_task("plural", "fact", ["make it plural", "give the plural"],
                      ["the plural of {x} is {y}", "{x} in plural is {y}"],
                      [(n, pl) for n, _, pl in NOUNS], rng),
        _list_task("bracket", ["put the list in brackets", "wrap the items in brackets"],
                   ["the list {x} in brackets is {y}"], lambda xs: "[ " + " ".join(xs) + " ]",
                   list_splits, rng, kind="format"),
        _list_task("first", ["give the first item", "which item comes first"],
                   ["the first of {x} is {y}"], lambda xs: xs[0], list_splits, rng),
        _list_task("last", ["give the last item", "which item comes last"],
                   ["the last of {x} is {y}"], lambda xs: xs[-1], list_splits, rng),
        _list_task("reverse", ["reverse the list", "write the items in reverse order"],
                   ["the reverse of {x} is {y}"], lambda xs: " ".join(reversed(xs)), list_splits, rng),
    ]

    french = {n: fr for n, fr, _ in NOUNS}
    plural = {n: pl for n, _, pl in NOUNS}
    new = [
        _mapping_task("describe", "classification", ["describe the input", "what kind of thing is it"],
                      ["the kind of {x} is {y}"],
                      [(w, f"it is {_article(kinds[w])} {kinds[w]}") for w in all_words], rng, is_new=True),
        _mapping_task("repeat", "format", ["repeat the word twice", "say the word two times"],
                      ["twice {x} is {y}"], [(w, f"{w} {w}") for w in all_words], rng, is_new=True),
        _list_task("middle", ["give the middle item", "which item is in the middle"],
                   ["the middle of {x} is {y}"], lambda xs: xs[1], list_splits, rng, is_new=True),
        _list_task("last_french", ["translate the last item to french", "say the last item in french"],
                   ["the last of {x} in french is {y}"], lambda xs: french[xs[-1]], list_splits, rng,
                   is_new=True),
        # Appended last, so that every task above keeps its data: the shipped model was trained on them.
        _list_task("first_french", ["translate the first item to french", "say the first item in french"],
                   ["the first of {x} in french is {y}"], lambda xs: french[xs[0]], list_splits, rng,
                   is_new=True),
        # Tasks the shipped model half-knows under their instruction (it composes "last item"
        # with a skill it has): chapter 4's control sequence, where the new task's vector has
        # something to carry. Appended, so that every task above keeps its data.
        _list_task("last_plural", ["give the last item in plural", "make the last item plural"],
                   ["the last of {x} in plural is {y}"], lambda xs: plural[xs[-1]], list_splits, rng,
                   is_new=True),
        _list_task("first_twice", ["repeat the first item twice", "say the first item twice"],
                   ["the first of {x} twice is {y}"], lambda xs: f"{xs[0]} {xs[0]}", list_splits, rng,
                   is_new=True),
    ]
    return World(seed=seed, tasks=tuple(general + new))
