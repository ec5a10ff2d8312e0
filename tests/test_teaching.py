"""The instruction-tuning stage: its sample, its shipped adapter, and the checks that refuse a bad one."""

import json
from collections import Counter
from dataclasses import replace

import pytest
import torch

from ivedu.settings import TeachingSettings, settings
from ivedu.study import (ADAPTER_FILE, MANIFEST_FILE, TeachingError, apply_teaching, load_study, load_tasks,
                         read_manifest, stage_folder)
from ivedu.teaching import TeachingReport, save_stage, teaching_sequences, train_stage
from ivedu.world import Example, Task

TINY_TASKS = ("plural", "capital")


def _tiny_stage(tmp_path, steps=2):
    lm = load_study(settings("ch0", "tiny"))
    world = load_tasks(settings("ch0", "tiny"))
    tasks = [world.task(n) for n in TINY_TASKS]
    teaching = TeachingSettings(tasks=TINY_TASKS, examples_per_task=8, steps=steps, batch_size=4, lr=1e-3)
    model, losses, _ = train_stage(lm, tasks, teaching)
    report = TeachingReport("tiny", json.loads(json.dumps(teaching.__dict__)), "", 0.0, losses[0], losses[-1], {}, {})
    return lm, teaching, save_stage(model, report, tmp_path / "tiny-taught")


def test_a_few_label_task_is_taught_with_its_labels_in_turn(world):
    a, b = sorted({ex.output for ex in world.task("plural").train})[:2]  # two words of the tiny vocabulary
    examples = tuple(Example(f"w{i}", a if i < 18 else b) for i in range(20))
    task = Task("answer", "classification", ("Say yes or no.",), ("{x} is {y}",), examples, (), ())
    lm = load_study(settings("ch0", "tiny"))
    seqs = teaching_sequences(lm, [task], TeachingSettings(tasks=("answer",), examples_per_task=10))
    learnt = Counter(tuple(label for label in s.labels if label != -100) for s in seqs)
    assert len(seqs) == 10 and sorted(learnt.values()) == [5, 5]  # 18 of 20 answer a, yet a and b are taught 5 each


def test_the_stage_trains_saves_and_loads_back_with_its_hash(tmp_path):
    lm, teaching, folder = _tiny_stage(tmp_path)
    manifest = read_manifest(folder, teaching)
    assert len(manifest["adapter_sha256"]) == 64 and (folder / ADAPTER_FILE).stat().st_size > 0
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    merged = apply_teaching(load_study(settings("ch0", "tiny")).model, folder, teaching)
    assert type(merged) is type(lm.model)
    assert all(p.requires_grad for p in merged.parameters()), "full fine-tuning trains every merged weight"
    changed = [not torch.equal(a, b) for a, b in zip(merged.state_dict().values(), lm.model.state_dict().values())]
    assert any(changed), "the merged stage left every weight as it was"


def test_a_damaged_missing_or_foreign_stage_is_refused_with_the_command_to_regenerate(tmp_path):
    _, teaching, folder = _tiny_stage(tmp_path)
    with pytest.raises(TeachingError, match="other settings.*python -m ivedu.teaching --profile tiny"):
        read_manifest(folder, replace(teaching, steps=3))
    data = bytearray((folder / ADAPTER_FILE).read_bytes())
    data[-1] ^= 1
    (folder / ADAPTER_FILE).write_bytes(bytes(data))
    with pytest.raises(TeachingError, match="damaged"):
        read_manifest(folder, teaching)
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(TeachingError, match="missing"):
        read_manifest(folder, teaching)


def test_settings_refuse_a_native_task_the_stage_does_not_rehearse():
    with pytest.raises(ValueError, match="not among the taught tasks"):
        TeachingSettings(tasks=("plural",), native=("capital",))
    assert TeachingSettings(tasks=("a", "b"), native=("a",)).taught == ("b",)


def test_the_smol_profile_ships_its_stage_made_with_its_settings():
    s = settings("ch0", "smol")
    manifest = read_manifest(stage_folder("smol"), s.teaching)
    assert manifest["model"] == "smol" and set(manifest["after"]) == set(s.teaching.tasks)


@pytest.mark.real_model
def test_the_study_model_answers_at_least_30_test_examples_of_every_general_task():
    """The real model's design: six general tasks, each scored on at least 30 test examples the
    study model (SmolLM2 plus its stage) answers right under its instruction."""
    from ivedu.study import general_tasks

    s = settings("ch1", "smol")
    lm = load_study(s)
    assert lm.name.startswith("smol+taught-")
    tasks = general_tasks(s, load_tasks(s, lm))
    assert len(tasks) >= 6 and set(s.teaching.native) < {t.name for t in tasks}
    assert {t.name: len(t.test) >= 30 for t in tasks} == {t.name: True for t in tasks}
