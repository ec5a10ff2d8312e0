"""Function-vector datasets: local files in that format, a fake downloader, no network."""

import hashlib
import json
import warnings

import pytest

from ivedu import datasets
from ivedu.datasets import DatasetHashError, UnpinnedHashWarning, dataset_file, function_vector_world, load_task

PAIRS = [{"input": f"w{i}", "output": f"a{i}"} for i in range(20)]


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
    path = dataset_file("antonym", tmp_path, sha256=digest, fetch=serve({"antonym": data}, calls))
    assert path.read_bytes() == data and calls == [datasets.dataset_url("antonym")]
    assert dataset_file("antonym", tmp_path, sha256=digest, fetch=offline) == path


def test_a_corrupted_download_fails_the_hash_check_and_leaves_nothing_in_the_cache(tmp_path):
    good = fv_bytes()
    corrupted = good.replace(b'"a3"', b'"a4"')
    with pytest.raises(DatasetHashError, match=r"antonym: the download .* has SHA-256 [0-9a-f]{64}, expected") as error:
        dataset_file("antonym", tmp_path, sha256=hashlib.sha256(good).hexdigest(),
                     fetch=serve({"antonym": corrupted}))
    assert "delete it from the cache" in str(error.value) and isinstance(error.value, ValueError)
    assert list(tmp_path.iterdir()) == []


def test_without_a_pin_the_first_hash_is_recorded_and_then_enforced(tmp_path):
    data = fv_bytes()
    with pytest.warns(UnpinnedHashWarning, match=hashlib.sha256(data).hexdigest()):
        path = dataset_file("antonym", tmp_path, sha256=None, fetch=serve({"antonym": data}))
    record = json.loads((tmp_path / datasets.RECORD_FILE).read_text())
    assert record == {"antonym": hashlib.sha256(data).hexdigest()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a recorded hash that matches: no warning
        dataset_file("antonym", tmp_path, sha256=None, fetch=offline)
    path.write_bytes(data.replace(b'"w1"', b'"w9"'))  # the cached file is corrupted later
    with pytest.raises(DatasetHashError, match="the cached file"):
        dataset_file("antonym", tmp_path, sha256=None, fetch=offline)


def test_a_download_that_is_not_the_format_is_refused_before_caching(tmp_path):
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        dataset_file("antonym", tmp_path, sha256=None, fetch=serve({"antonym": b"<html>rate limited</html>"}))
    bad = json.dumps([{"input": "a", "output": "b"}, {"input": "c"}]).encode()
    with pytest.raises(ValueError, match='entry 1 .* needs non-empty "input" and "output"'):
        dataset_file("antonym", tmp_path, sha256=None, fetch=serve({"antonym": bad}))
    assert not (tmp_path / "antonym.json").exists()


def test_the_package_pins_are_measured_hashes_or_explicitly_missing():
    assert set(datasets.PINNED_SHA256) == set(datasets.TASKS)
    for name, digest in datasets.PINNED_SHA256.items():
        assert digest is None or (len(digest) == 64 and int(digest, 16) >= 0), name


def test_a_dataset_becomes_a_task_with_instructions_splits_and_distractors(tmp_path):
    data = fv_bytes(PAIRS + [{"input": "w0", "output": "duplicate"}])
    task = load_task("country-capital", tmp_path, sha256=hashlib.sha256(data).hexdigest(),
                     fetch=serve({"country-capital": data}), is_new=False)
    assert task.instructions == datasets.TASKS["country-capital"].instructions
    assert (len(task.train), len(task.valid), len(task.test)) == (12, 4, 4)  # the duplicate input is dropped
    assert not task.is_new and task.statement_prefix("france") == "The capital of france is"
    assert all(ex.output not in ex.distractors and len(ex.distractors) == 3 for ex in task.train)
    subset = load_task("country-capital", tmp_path, max_examples=10, fetch=offline)
    assert len(subset.split("train") + subset.split("heldout")) == 10


def test_an_unknown_dataset_needs_its_instructions(tmp_path):
    with pytest.raises(ValueError, match="no instructions for dataset 'word_length'.*antonym"):
        load_task("word_length", tmp_path, fetch=offline)
    template = datasets.TaskTemplate(("How many letters?", "Count the letters."), ("{x} has {y}",))
    with pytest.warns(UnpinnedHashWarning, match="PINNED_SHA256\\['word_length'\\]"):
        task = load_task("word_length", tmp_path, template=template, fetch=serve({"word_length": fv_bytes()}))
    assert task.instructions == template.instructions


def test_every_template_makes_a_valid_task(tmp_path):
    files = {name: fv_bytes() for name in datasets.TASKS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedHashWarning)
        for name in datasets.TASKS:
            task = load_task(name, tmp_path, fetch=serve(files))
            assert len(task.instructions) >= 2 and task.statements


def test_a_world_of_datasets_has_general_and_new_tasks(tmp_path):
    files = {name: fv_bytes() for name in ("antonym", "present-past", "english-german")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedHashWarning)
        world = function_vector_world(["antonym", "present-past"], ["english-german"], tmp_path, fetch=serve(files))
    assert [t.name for t in world.general] == ["antonym", "present-past"]
    assert [t.name for t in world.new] == ["english-german"] and world.task("antonym").train
    with pytest.raises(ValueError, match="both general and new"):
        function_vector_world(["antonym"], ["antonym"], tmp_path, fetch=offline)
