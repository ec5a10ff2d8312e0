"""Function-vector datasets: the shipped files, and local files in that format behind a fake
downloader for the download path of datasets the package does not ship; no network."""

import hashlib
import json
import shutil
import warnings

import pytest

from ivedu import datasets
from ivedu.datasets import DatasetHashError, UnpinnedHashWarning, dataset_file, function_vector_world, load_task

PAIRS = [{"input": f"w{i}", "output": f"a{i}"} for i in range(20)]
# Upstream datasets the package does not ship (2 MB each): the download path is tested with them.
NOT_SHIPPED = "commonsense_qa"
ALSO_NOT_SHIPPED = "ag_news"


def fv_bytes(pairs=PAIRS) -> bytes:
    """A file exactly as the function-vector repository writes them (a JSON list, indent 2)."""
    return json.dumps(pairs, indent=2).encode()


def serve(files: dict[str, bytes], calls: list[str] | None = None):
    """A downloader that serves ``files`` by dataset name and records every URL asked for."""
    def fetch(url: str) -> bytes:
        if calls is not None:
            calls.append(url)
        return files[url.rsplit("/", 1)[-1].removesuffix(".json")]
    return fetch


def offline(url: str) -> bytes:
    raise AssertionError(f"no download expected, but {url} was fetched")


def test_a_pinned_download_is_cached_and_later_loads_do_not_download(tmp_path):
    data, calls = fv_bytes(), []
    digest = hashlib.sha256(data).hexdigest()
    path = dataset_file(NOT_SHIPPED, tmp_path, sha256=digest, fetch=serve({NOT_SHIPPED: data}, calls))
    assert path.read_bytes() == data and calls == [datasets.dataset_url(NOT_SHIPPED)]
    assert dataset_file(NOT_SHIPPED, tmp_path, sha256=digest, fetch=offline) == path


def test_a_corrupted_download_fails_the_hash_check_and_leaves_nothing_in_the_cache(tmp_path):
    good = fv_bytes()
    corrupted = good.replace(b'"a3"', b'"a4"')
    pattern = rf"{NOT_SHIPPED}: the download .* has SHA-256 [0-9a-f]{{64}}, expected"
    with pytest.raises(DatasetHashError, match=pattern) as error:
        dataset_file(NOT_SHIPPED, tmp_path, sha256=hashlib.sha256(good).hexdigest(),
                     fetch=serve({NOT_SHIPPED: corrupted}))
    assert "delete it from the cache" in str(error.value) and isinstance(error.value, ValueError)
    assert list(tmp_path.iterdir()) == []


def test_without_a_pin_the_first_hash_is_recorded_and_then_enforced(tmp_path):
    data = fv_bytes()
    with pytest.warns(UnpinnedHashWarning, match=hashlib.sha256(data).hexdigest()):
        path = dataset_file(NOT_SHIPPED, tmp_path, sha256=None, fetch=serve({NOT_SHIPPED: data}))
    record = json.loads((tmp_path / datasets.RECORD_FILE).read_text())
    assert record == {NOT_SHIPPED: hashlib.sha256(data).hexdigest()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a recorded hash that matches: no warning
        dataset_file(NOT_SHIPPED, tmp_path, sha256=None, fetch=offline)
    path.write_bytes(data.replace(b'"w1"', b'"w9"'))  # the cached file is corrupted later
    with pytest.raises(DatasetHashError, match="the cached file"):
        dataset_file(NOT_SHIPPED, tmp_path, sha256=None, fetch=offline)


def test_a_download_that_is_not_the_format_is_refused_before_caching(tmp_path):
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        dataset_file(NOT_SHIPPED, tmp_path, sha256=None, fetch=serve({NOT_SHIPPED: b"<html>rate limited</html>"}))
    bad = json.dumps([{"input": "a", "output": "b"}, {"input": "c"}]).encode()
    with pytest.raises(ValueError, match='entry 1 .* needs non-empty "input" and "output"'):
        dataset_file(NOT_SHIPPED, tmp_path, sha256=None, fetch=serve({NOT_SHIPPED: bad}))
    assert not (tmp_path / f"{NOT_SHIPPED}.json").exists()


def test_the_pins_are_the_hashes_of_the_shipped_files():
    shipped = datasets.shipped_datasets()
    assert len(shipped) == 27 and NOT_SHIPPED not in shipped and ALSO_NOT_SHIPPED not in shipped
    assert set(datasets.PINNED_SHA256) == set(shipped) and set(datasets.TASKS) <= set(shipped)
    for name in shipped:
        data = (datasets.SHIPPED_DIR / f"{name}.json").read_bytes()
        assert datasets.PINNED_SHA256[name] == hashlib.sha256(data).hexdigest(), name
    assert (datasets.SHIPPED_DIR / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2023 Eric Todd")
    assert datasets.REVISION in (datasets.SHIPPED_DIR / "README.md").read_text()


def test_shipped_files_load_with_no_download_and_no_cache(tmp_path):
    cache = tmp_path / "cache"
    for name in datasets.shipped_datasets():
        path = dataset_file(name, cache, fetch=offline)
        assert path == datasets.SHIPPED_DIR / f"{name}.json" and datasets.parse_pairs(path.read_bytes())
    assert dataset_file("antonym", cache, sha256=datasets.PINNED_SHA256["antonym"], fetch=offline).exists()
    with pytest.raises(DatasetHashError, match="antonym: the shipped file .* expected 0+ \\(sha256=\\)"):
        dataset_file("antonym", cache, sha256="0" * 64, fetch=offline)
    assert not cache.exists()


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    shipped = tmp_path / "function_vectors"
    shutil.copytree(datasets.SHIPPED_DIR, shipped)
    path = shipped / "country-capital.json"
    data = bytearray(path.read_bytes())
    data[data.index(b"Paris")] = ord("B")  # one byte changed, still valid JSON
    path.write_bytes(bytes(data))
    monkeypatch.setattr(datasets, "SHIPPED_DIR", shipped)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetHashError, match=r"country-capital: the shipped file .*country-capital\.json "
                                               r"has SHA-256 [0-9a-f]{64}, expected .*reinstall ivedu"):
        load_task("country-capital", cache, fetch=offline)
    assert dataset_file("antonym", cache, fetch=offline).parent == shipped  # the others still load
    assert not cache.exists()


def test_a_dataset_becomes_a_task_with_instructions_splits_and_distractors(tmp_path):
    data = fv_bytes(PAIRS + [{"input": "w0", "output": "duplicate"}])
    template = datasets.TASKS["country-capital"]
    task = load_task(NOT_SHIPPED, tmp_path, sha256=hashlib.sha256(data).hexdigest(), template=template,
                     fetch=serve({NOT_SHIPPED: data}), is_new=False)
    assert task.instructions == template.instructions
    assert (len(task.train), len(task.valid), len(task.test)) == (12, 4, 4)  # the duplicate input is dropped
    assert not task.is_new and task.statement_prefix("france") == "The capital of france is"
    assert all(ex.output not in ex.distractors and len(ex.distractors) == 3 for ex in task.train)
    subset = load_task(NOT_SHIPPED, tmp_path, max_examples=10, template=template, fetch=offline)
    assert len(subset.split("train") + subset.split("heldout")) == 10


def test_an_unknown_dataset_needs_its_instructions(tmp_path):
    with pytest.raises(ValueError, match=f"no instructions for dataset '{ALSO_NOT_SHIPPED}'.*antonym"):
        load_task(ALSO_NOT_SHIPPED, tmp_path, fetch=offline)
    template = datasets.TaskTemplate(("What is the topic of this news story?", "Name the news topic."),
                                     ("The topic of {x} is {y}",), kind="classification")
    with pytest.warns(UnpinnedHashWarning, match=f"PINNED_SHA256\\['{ALSO_NOT_SHIPPED}'\\]"):
        task = load_task(ALSO_NOT_SHIPPED, tmp_path, template=template, fetch=serve({ALSO_NOT_SHIPPED: fv_bytes()}))
    assert task.instructions == template.instructions


def test_every_template_makes_a_valid_task_from_its_shipped_file(tmp_path):
    for name, template in datasets.TASKS.items():
        assert len(template.instructions) == 2 and template.statements, name
        assert all("{x}" in s and s.endswith("{y}") for s in template.statements), name
        task = load_task(name, tmp_path, max_examples=300, fetch=offline)
        assert task.kind == template.kind and task.instructions == template.instructions
        assert task.train and task.valid and task.test, name
    first_letter = datasets.TASKS["lowercase_first_letter"].instructions[0]
    assert first_letter == "Give the first letter of this word in lowercase."  # the phrasing of a trial
    assert list(tmp_path.iterdir()) == []


def test_a_world_of_shipped_datasets_has_general_and_new_tasks(tmp_path):
    world = function_vector_world(["antonym", "present-past"], ["english-german"], tmp_path, fetch=offline)
    assert [t.name for t in world.general] == ["antonym", "present-past"]
    assert [t.name for t in world.new] == ["english-german"] and world.task("antonym").train
    assert all(len(t.split("train") + t.split("heldout")) <= 300 for t in world.tasks)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="both general and new"):
        function_vector_world(["antonym"], ["antonym"], tmp_path, fetch=offline)
