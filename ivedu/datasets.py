"""Real task data for real models: Todd et al.'s function-vector datasets as ivedu tasks.

Each dataset is a JSON file, a list of ``{"input": ..., "output": ...}`` pairs
(``antonym.json``: ``{"input": "accept", "output": "reject"}``), from
``github.com/ericwtodd/function_vectors`` under ``dataset_files/abstractive/``.
:func:`load_task` turns one into a :class:`ivedu.world.Task` with two instruction phrasings
and statement templates (:data:`TASKS`), so every chapter's code runs on it as on the tiny
world's tasks.

**Shipped files.** The package ships 27 of these files (all of ``dataset_files/abstractive/``
but ``commonsense_qa`` and ``ag_news``, 2 MB each) in ``ivedu/data/function_vectors/``, unchanged
copies at commit :data:`REVISION`, with their MIT licence (copyright 2023 Eric Todd) and a
README beside them; :func:`shipped_datasets` lists them. They ship because the machines this
project runs on reach package registries but not GitHub: a shipped dataset is read from the
package with no network access and no cache.

**Hashes.** :data:`PINNED_SHA256` holds the SHA-256 of every shipped file, measured once on the
files themselves and written here as literals (a test recomputes them, so a pin cannot drift
from its file). Every load checks the shipped file against its pin; a damaged file is refused
with :class:`DatasetHashError` (reinstall ivedu). A dataset the package does not ship is
downloaded from :data:`REVISION` on first use into a cache folder. With a pin (an entry added to
:data:`PINNED_SHA256`, or ``sha256=``), a download that differs is refused with
:class:`DatasetHashError` and nothing is written. With none, the check is *trust on first
use*: the first download's SHA-256 is recorded next to the cached file (``sha256.json``) and
announced with an :class:`UnpinnedHashWarning` that gives the line to pin it; every later load
checks the cached file against the record. Files are written to a temporary name and moved
into place only when complete and checked, so an interrupted or refused download leaves no
partial file.
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

from ivedu.arguments import (check_bytes, check_callable, check_number, check_optional_path,
                             check_optional_positive_int, check_seed, check_str, check_strs)
from ivedu.world import Task, World, custom_task

# The commit of ericwtodd/function_vectors the shipped files were copied from; a dataset the
# package does not ship is downloaded from the same commit, so every URL is reproducible.
REVISION = "fb9eac7b6dc707ea1475a717379916007fe448d5"
SHIPPED_DIR = Path(__file__).parent / "data" / "function_vectors"
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
    "capitalize_first_letter": TaskTemplate(
        ("Give the first letter of this word as a capital letter.",
         "What is the first letter of the word, in uppercase?"),
        ("The first letter of {x} in uppercase is {y}", "{x} starts with the capital letter {y}"), kind="format"),
    "capitalize_last_letter": TaskTemplate(
        ("Give the last letter of this word as a capital letter.",
         "What is the last letter of the word, in uppercase?"),
        ("The last letter of {x} in uppercase is {y}", "{x} ends with the capital letter {y}"), kind="format"),
    "capitalize_second_letter": TaskTemplate(
        ("Give the second letter of this word as a capital letter.",
         "What is the second letter of the word, in uppercase?"),
        ("The second letter of {x} in uppercase is {y}", "The capital form of the second letter of {x} is {y}"),
        kind="format"),
    "lowercase_first_letter": TaskTemplate(
        ("Give the first letter of this word in lowercase.",
         "What is the first letter of the word, as a lowercase letter?"),
        ("The first letter of {x} in lowercase is {y}", "{x} starts with the lowercase letter {y}"), kind="format"),
    "lowercase_last_letter": TaskTemplate(
        ("Give the last letter of this word in lowercase.",
         "What is the last letter of the word, as a lowercase letter?"),
        ("The last letter of {x} in lowercase is {y}", "{x} ends with the lowercase letter {y}"), kind="format"),
    "next_capital_letter": TaskTemplate(
        ("Give the letter of the alphabet that comes after this word's first letter, as a capital letter.",
         "Which letter follows the first letter of the word in the alphabet? Answer in uppercase."),
        ("In the alphabet, the capital letter after the first letter of {x} is {y}",
         "The letter after the first letter of {x}, in uppercase, is {y}"), kind="format"),
    "word_length": TaskTemplate(("How many letters are in this word?", "Count the letters of the word."),
                                ("The number of letters in {x} is {y}", "The length of the word {x} is {y}"),
                                kind="format"),
    "next_item": TaskTemplate(("What comes right after this item in its sequence?",
                               "Name the next item in the sequence."),
                              ("The item after {x} is {y}", "{x} is followed by {y}")),
    "prev_item": TaskTemplate(("What comes right before this item in its sequence?",
                               "Name the previous item in the sequence."),
                              ("The item before {x} is {y}", "{x} comes right after {y}")),
    "person-instrument": TaskTemplate(("Which instrument does this musician play?",
                                       "Name the instrument the person plays."),
                                      ("{x} plays the {y}", "The instrument of {x} is the {y}")),
    "person-sport": TaskTemplate(("Which sport does this athlete play?", "Name the sport the person plays."),
                                 ("{x} plays {y}", "The sport of {x} is {y}")),
    "park-country": TaskTemplate(("In which country is this national park?", "Name the country of the national park."),
                                 ("{x} is a national park in {y}", "{x} is located in {y}")),
    "national_parks": TaskTemplate(("In which US state or territory is this national park site?",
                                    "Name the US state where the park site is."),
                                   ("{x} is a national park site in {y}", "{x} is located in {y}")),
    "sentiment": TaskTemplate(("Is the sentiment of this review positive or negative?",
                               "Classify the review as positive or negative."),
                              ('The sentiment of the review "{x}" is {y}', 'The review "{x}" is {y}'),
                              kind="classification"),
}

# SHA-256 of each shipped file (ivedu/data/function_vectors/, copied at REVISION), measured once
# on the files and written here; tests/test_datasets.py recomputes them. A dataset the package
# does not ship has no entry (trust on first use, see the module docstring) unless one is added.
PINNED_SHA256: dict[str, str] = {
    "antonym": "ba66e8e399944b557251b11a37b11f9ba7a50f0a57286f7021a8a7b26b469e8d",
    "capitalize": "9aad849c761de2f0c6195eb73496a0cfe7e600751b0d61a3c82709b1a3dcd53f",
    "capitalize_first_letter": "147c3a091f000c21b2512ab8461029881ef05600414a0633078b460da7b9f5b3",
    "capitalize_last_letter": "5f51a2c03a40d914c26eb0785d40c6470b3f915dac0c11030e564355d1114902",
    "capitalize_second_letter": "c6c1f45b7eb6e03b5d004fa300af4735861bb383971bb6122c6ac09f85d45455",
    "country-capital": "5748cbfb789c2d671f8a88bf8eaa8a800ead77299e34e1d0cafae11b0409782b",
    "country-currency": "cd66bf2650b432cbe4a8a33222bdbc3628b1c667acf7c34537aeafbeff8e32a0",
    "english-french": "766fa28cc696f37b1009f36372372797be03444045c58bc554759f3e177638cc",
    "english-german": "9111e1ee296059761eeb0f8f43dc25f84983c2f14ce1081bc96f5698de4b98cd",
    "english-spanish": "d79388dd79b2871ce31caa5ab162900f888285bde80f626d9dd3be494ab63bf4",
    "landmark-country": "c96fb4514a4b93426150ec499064bcc5988ac11b440af88bde2196a7b474e240",
    "lowercase_first_letter": "7c30a855decdacb5ca108f112dae630f4cca84dbdf13f34deb3f26cb4f85cee9",
    "lowercase_last_letter": "48d93dd14e6e07fa2a8c8e81d9f76629a6526ae32a791b2c3a2384244d86d92f",
    "national_parks": "ffe2018634ffac660e07cef0f330a52991f18f06ffb0af1abd46a2189cf2ed14",
    "next_capital_letter": "d99606de4d277354aba0d99cd407f0bcc46dc1eaef5f0f8345975a0686b02677",
    "next_item": "fbef21cf40e1c6f4b12100812b09daa8e079f79b84ea3fea0e99637ea70f8873",
    "park-country": "2f64b436d38376614087b345ad764b279d5fa1b72c22cc8db18ecd96042c6df7",
    "person-instrument": "4fff080310e723dc85cca5c10c0c11eebf30df230e8fc102448a4adb0f5da49c",
    "person-occupation": "2c2fac0d4ba5a0aec033005c92ea170c6254f1d30a9b063c9ae5be0ff5d093d7",
    "person-sport": "4c9bef3f97a77a05171070a09132f7104768affe4a39d17fd4ca338f89dcca6f",
    "present-past": "bd6f7d484a967646aa5854740c70803568225f47a5630e1555c39e827ba9c78b",
    "prev_item": "ca59f4f8c82695903f7266c5ded68f731e52739e991ccf0f5389c36c950cb179",
    "product-company": "196cc243053ff6de7daf36f2d51b495ff504eeeec0fa74bc02ad646d19807f33",
    "sentiment": "e63f927bf5920c3acf01dcbdc628bc07118731a77916de4bf0f6e3e443f75413",
    "singular-plural": "beac51d02481a63115f0f7879e0dfc8d70244aeaea4d0a8d5193a5b2dfc07b9b",
    "synonym": "dc0c79f94b70999236ec962465b21ab416074ea2969a980eafa85e9cb2702685",
    "word_length": "613e1f3399432888d935af4bf68292cfad6147506807ce26743cb17d34060c1a",
}


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
    check_str("name", name)
    check_str("revision", revision)
    return URL_TEMPLATE.format(revision=revision, name=name)


def fetch_url(url: str, timeout: float = 60.0) -> bytes:
    """The bytes at ``url`` (the default downloader; tests pass their own)."""
    check_str("url", url)
    check_number("timeout", timeout, above=0.0)
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a fixed https URL)
        return response.read()


def sha256_of(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 hex digits."""
    return hashlib.sha256(check_bytes("data", data)).hexdigest()


def parse_pairs(data: bytes, source: str = "the dataset") -> list[tuple[str, str]]:
    """The ``(input, output)`` pairs of a function-vector JSON file; ``ValueError`` naming the
    first bad entry when it is not a list of objects with non-empty string fields."""
    check_bytes("data", data)
    check_str("source", source)
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


def shipped_datasets() -> list[str]:
    """The names of the datasets the package ships (``ivedu/data/function_vectors/*.json``), sorted."""
    return sorted(path.stem for path in SHIPPED_DIR.glob("*.json"))


def shipped_file(name: str) -> Path:
    """The shipped file of dataset ``name``, checked against its pin; :class:`DatasetHashError`
    (reinstall ivedu) when the file is damaged or the package has no pin for it."""
    check_str("name", name)
    path = SHIPPED_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"ivedu does not ship dataset {name!r}; it ships {shipped_datasets()}")
    digest, pinned = sha256_of(path.read_bytes()), PINNED_SHA256.get(name)
    if digest != pinned:
        expected = f"expected {pinned}" if pinned else "which is not pinned"
        raise DatasetHashError(f"{name}: the shipped file {path} has SHA-256 {digest}, {expected} "
                               "(ivedu.datasets.PINNED_SHA256). The installed package is damaged or was edited; "
                               "reinstall ivedu (pip install --force-reinstall ivedu, or a fresh checkout)")
    return path


def dataset_file(name: str, cache_dir: str | os.PathLike | None = None, *, sha256=_PACKAGE_PIN,
                 fetch: Callable[[str], bytes] = fetch_url) -> Path:
    """The file of dataset ``name``, hash-checked: the shipped one, or a cached download.

    A dataset the package ships (:func:`shipped_datasets`) is its shipped file, checked
    against :data:`PINNED_SHA256` (:func:`shipped_file`): no network, nothing written to
    ``cache_dir``, ``fetch`` never called. ``sha256`` given as a hash must then be the pin.

    Any other dataset is downloaded with ``fetch`` on first use into ``cache_dir``.
    ``sha256``: the expected hash; by default the package's pin (:data:`PINNED_SHA256`),
    ``None`` for none. With no pin, the first download's hash is recorded and later loads are
    checked against the record (trust on first use, see the module docstring).
    """
    check_str("name", name)
    check_optional_path("cache_dir", cache_dir)
    if sha256 is not _PACKAGE_PIN and sha256 is not None:
        check_str("sha256", sha256)
    check_callable("fetch", fetch)
    if (SHIPPED_DIR / f"{name}.json").is_file():
        path = shipped_file(name)
        if sha256 is not _PACKAGE_PIN and sha256 is not None and sha256 != PINNED_SHA256[name]:
            raise DatasetHashError(f"{name}: the shipped file {path} has SHA-256 {PINNED_SHA256[name]}, "
                                   f"expected {sha256} (sha256=)")
        return path
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

    The file comes from :func:`dataset_file`: the shipped one when the package ships ``name``
    (no network), else a cached download. ``max_examples`` keeps a random subset (``seed``) of
    a large file (english-french has thousands of pairs). ``template`` gives the instructions
    for a dataset missing from :data:`TASKS`. ``is_new`` marks a task kept back for fine-tuning.
    """
    check_str("name", name)
    check_optional_positive_int("max_examples", max_examples)
    check_seed("seed", seed)
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
    check_strs("general", general, nonempty=False, unique=True)
    check_strs("new", new, nonempty=False, unique=True)
    check_optional_positive_int("max_examples", max_examples)
    check_seed("seed", seed)
    overlap = set(general) & set(new)
    if overlap:
        raise ValueError(f"tasks {sorted(overlap)} are both general and new; a task is one or the other")
    tasks = [load_task(n, cache_dir, max_examples=max_examples, seed=seed, is_new=False, fetch=fetch) for n in general]
    tasks += [load_task(n, cache_dir, max_examples=max_examples, seed=seed, is_new=True, fetch=fetch) for n in new]
    return World(seed=seed, tasks=tuple(tasks))
