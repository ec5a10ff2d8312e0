"""Real task data for real models: Todd et al.'s function-vector datasets as ivedu tasks.

Each dataset is a public JSON file, a list of ``{"input": ..., "output": ...}`` pairs
(``antonym.json``: ``{"input": "accept", "output": "reject"}``), in
``github.com/ericwtodd/function_vectors`` under ``dataset_files/abstractive/``.
:func:`load_task` downloads a file on first use into a cache folder, checks its SHA-256,
and turns it into a :class:`ivedu.world.Task` with two instruction phrasings and statement
templates (:data:`TASKS`), so every chapter's code runs on it as on the tiny world's tasks.

**Hashes.** A hash can only be pinned by someone who has downloaded the file; this package
was written without network access, so :data:`PINNED_SHA256` holds ``None`` for every file
rather than a hash nobody measured. The check is then *trust on first use*: the first
download's SHA-256 is recorded next to the cached file (``sha256.json``) and announced with an
:class:`UnpinnedHashWarning` that gives the line to pin it; every later load checks the
cached file against the record. Once a hash is pinned in :data:`PINNED_SHA256` (or passed
as ``sha256=``), a download that differs is refused with :class:`DatasetHashError` and
nothing is written. Files are written to a temporary name and moved into place only when
complete and checked, so an interrupted or refused download leaves no partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from ivedu.world import Task, World, custom_task

REVISION = "main"
URL_TEMPLATE = ("https://raw.githubusercontent.com/ericwtodd/function_vectors/{revision}/"
                "dataset_files/abstractive/{name}.json")
RECORD_FILE = "sha256.json"
_PACKAGE_PIN = object()  # "use PINNED_SHA256", distinct from an explicit sha256=None


@dataclass(frozen=True)
class TaskTemplate:
    """How one dataset is asked for: two instruction phrasings, statement templates, its kind.

    Statements are the knowledge probe with no instruction ("The capital of {x} is {y}"),
    each with an ``{x}`` and ending with ``{y}``, as :class:`ivedu.world.Task` requires.
    """

    instructions: tuple[str, ...]
    statements: tuple[str, ...]
    kind: str = "fact"


TASKS: dict[str, TaskTemplate] = {
    "antonym": TaskTemplate(("Give the opposite of the word.", "What is the antonym of this word?"),
                            ("The opposite of {x} is {y}", "The antonym of {x} is {y}")),
    "capitalize": TaskTemplate(("Write the word with a capital first letter.", "Capitalize the word."),
                               ("{x} capitalized is {y}",), kind="format"),
    "country-capital": TaskTemplate(("What is the capital city of this country?", "Name the capital of the country."),
                                    ("The capital of {x} is {y}", "The capital city of {x} is {y}")),
    "country-currency": TaskTemplate(("What currency is used in this country?", "Name the currency of the country."),
                                     ("The currency of {x} is {y}", "In {x} people pay with {y}")),
    "english-french": TaskTemplate(("Translate the word into French.", "What is this word in French?"),
                                   ("The French word for {x} is {y}", "{x} in French is {y}")),
    "english-german": TaskTemplate(("Translate the word into German.", "What is this word in German?"),
                                   ("The German word for {x} is {y}", "{x} in German is {y}")),
    "english-spanish": TaskTemplate(("Translate the word into Spanish.", "What is this word in Spanish?"),
                                    ("The Spanish word for {x} is {y}", "{x} in Spanish is {y}")),
    "landmark-country": TaskTemplate(("In which country is this landmark?", "Name the country of the landmark."),
                                     ("{x} is a landmark in {y}", "{x} is located in {y}")),
    "person-occupation": TaskTemplate(("What is this person's occupation?", "Name the job of the person."),
                                      ("The occupation of {x} is {y}", "{x} worked as {y}")),
    "present-past": TaskTemplate(("Give the past tense of the verb.", "Put the verb in the past tense."),
                                 ("The past tense of {x} is {y}", "Today they {x}; yesterday they {y}")),
    "product-company": TaskTemplate(("Which company makes this product?", "Name the maker of the product."),
                                    ("{x} is made by {y}", "The company behind {x} is {y}")),
    "singular-plural": TaskTemplate(("Give the plural of the noun.", "Make the word plural."),
                                    ("The plural of {x} is {y}", "One {x}, two {y}")),
    "synonym": TaskTemplate(("Give a word with the same meaning.", "What is a synonym of this word?"),
                            ("A synonym of {x} is {y}", "{x} means the same as {y}")),
}

# SHA-256 of each file at REVISION. None: not measured yet (see the module docstring); fill in
# from the UnpinnedHashWarning of a first download, never by hand.
PINNED_SHA256: dict[str, str | None] = {name: None for name in TASKS}


class DatasetHashError(ValueError):
    """A dataset file's SHA-256 is not the pinned or recorded one."""


class UnpinnedHashWarning(UserWarning):
    """A dataset was downloaded with no pinned hash; its hash was recorded on first use."""


def default_cache_dir() -> Path:
    """``$IVEDU_CACHE/function_vectors``, or ``~/.cache/ivedu/function_vectors``."""
    root = os.environ.get("IVEDU_CACHE") or Path.home() / ".cache" / "ivedu"
    return Path(root) / "function_vectors"


def dataset_url(name: str, revision: str = REVISION) -> str:
    """The raw-file URL of dataset ``name``."""
    return URL_TEMPLATE.format(revision=revision, name=name)


def fetch_url(url: str, timeout: float = 60.0) -> bytes:
    """The bytes at ``url`` (the default downloader; tests pass their own)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a fixed https URL)
        return response.read()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_pairs(data: bytes, source: str = "the dataset") -> list[tuple[str, str]]:
    """The ``(input, output)`` pairs of a function-vector JSON file; ``ValueError`` naming the
    first bad entry when it is not a list of objects with non-empty string fields."""
    try:
        items = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{source} is not UTF-8 JSON ({error}); expected a list of "
                         '{"input": ..., "output": ...} objects') from error
    if not isinstance(items, list) or not items:
        raise ValueError(f'{source} must be a non-empty JSON list of {{"input": ..., "output": ...}} objects')
    pairs = []
    for i, item in enumerate(items):
        ok = isinstance(item, dict) and all(isinstance(item.get(k), str) and item[k].strip()
                                            for k in ("input", "output"))
        if not ok:
            raise ValueError(f'{source}: entry {i} is {item!r}; every entry needs non-empty "input" and '
                             '"output" strings')
        pairs.append((item["input"].strip(), item["output"].strip()))
    return pairs


def _atomic_write(dest: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``dest`` and move it into place when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _records(cache_dir: Path) -> dict[str, str]:
    path = cache_dir / RECORD_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _record(cache_dir: Path, name: str, digest: str) -> None:
    records = _records(cache_dir)
    records[name] = digest
    _atomic_write(cache_dir / RECORD_FILE, (json.dumps(records, indent=1, sort_keys=True) + "\n").encode())


def _check(name: str, digest: str, expected: str, where: str) -> None:
    if digest != expected:
        raise DatasetHashError(f"{name}: {where} has SHA-256 {digest}, expected {expected}. The file is "
                               "corrupted or changed upstream; delete it from the cache to download it again, "
                               f"or check the pin in ivedu.datasets.PINNED_SHA256 (revision {REVISION!r})")


def dataset_file(name: str, cache_dir: str | os.PathLike | None = None, *, sha256=_PACKAGE_PIN,
                 fetch: Callable[[str], bytes] = fetch_url) -> Path:
    """The cached file of dataset ``name``, downloaded with ``fetch`` on first use, hash-checked.

    ``sha256``: the expected hash; by default the package's pin (:data:`PINNED_SHA256`),
    ``None`` for none. With no pin, the first download's hash is recorded and later loads are
    checked against the record (see the module docstring).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    pinned = PINNED_SHA256.get(name) if sha256 is _PACKAGE_PIN else sha256
    path = cache / f"{name}.json"
    if path.exists():
        digest = sha256_of(path.read_bytes())
        expected = pinned or _records(cache).get(name)
        if expected is None:
            warnings.warn(f"{name}: the cached file {path} has no pinned or recorded hash; recording "
                          f"SHA-256 {digest} now", UnpinnedHashWarning, stacklevel=2)
            _record(cache, name, digest)
        else:
            _check(name, digest, expected, f"the cached file {path}")
        return path
    url = dataset_url(name)
    data = fetch(url)
    digest = sha256_of(data)
    if pinned:
        _check(name, digest, pinned, f"the download from {url}")
    parse_pairs(data, f"the download from {url}")  # never cache an error page
    _atomic_write(path, data)
    _record(cache, name, digest)
    if not pinned:
        warnings.warn(f"{name}: no pinned SHA-256; recorded {digest} on first download (trust on first use). "
                      f"To pin it: ivedu.datasets.PINNED_SHA256[{name!r}] = {digest!r}",
                      UnpinnedHashWarning, stacklevel=2)
    return path


def load_task(name: str, cache_dir: str | os.PathLike | None = None, *, max_examples: int | None = None,
              seed: int = 0, is_new: bool = True, template: TaskTemplate | None = None, sha256=_PACKAGE_PIN,
              fetch: Callable[[str], bytes] = fetch_url) -> Task:
    """Dataset ``name`` as a :class:`ivedu.world.Task`, split 60/20/20 by ``seed``.

    ``max_examples`` keeps a random subset (``seed``) of a large file (english-french has
    thousands of pairs). ``template`` gives the instructions for a dataset missing from
    :data:`TASKS`. ``is_new`` marks a task kept back for fine-tuning.
    """
    template = template or TASKS.get(name)
    if template is None:
        raise ValueError(f"no instructions for dataset {name!r}: pass template=TaskTemplate(...), "
                         f"or use one of {sorted(TASKS)}")
    path = dataset_file(name, cache_dir, sha256=sha256, fetch=fetch)
    pairs = _dedupe(parse_pairs(path.read_bytes(), str(path)))
    if max_examples is not None and len(pairs) > max_examples:
        pairs = random.Random(seed).sample(pairs, max_examples)
    task = custom_task(name, [x for x, _ in pairs], [y for _, y in pairs], template.instructions,
                       statements=template.statements, kind=template.kind, seed=seed)
    return replace(task, is_new=is_new)


def _dedupe(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """First answer of each input: an input listed twice would sit in two splits."""
    seen: dict[str, str] = {}
    for x, y in pairs:
        seen.setdefault(x, y)
    return list(seen.items())


def function_vector_world(general: Sequence[str], new: Sequence[str] = (), cache_dir=None, *,
                          max_examples: int | None = 300, seed: int = 0,
                          fetch: Callable[[str], bytes] = fetch_url) -> World:
    """A :class:`ivedu.world.World` of function-vector datasets: ``general`` tasks (the ones the
    model is scored on) and ``new`` ones (kept back for fine-tuning), the real-model
    counterpart of :func:`ivedu.world.build_world`."""
    overlap = set(general) & set(new)
    if overlap:
        raise ValueError(f"tasks {sorted(overlap)} are both general and new; a task is one or the other")
    tasks = [load_task(n, cache_dir, max_examples=max_examples, seed=seed, is_new=False, fetch=fetch) for n in general]
    tasks += [load_task(n, cache_dir, max_examples=max_examples, seed=seed, is_new=True, fetch=fetch) for n in new]
    return World(seed=seed, tasks=tuple(tasks))
