"""The model under study: a model, its tokenizer and its prompt format, which travel together.

Every measurement of the book writes prompts, and a prompt is only right in the format the
model was instruction-tuned with: the tiny format for the tiny model, the model's own chat
template for a real one (:func:`ivedu.prompts.chat_format`), which also says where a generated
answer ends (:attr:`ivedu.prompts.PromptFormat.stop`). A :class:`ModelUnderStudy` keeps the three
together and every step of the method takes it whole, so no step can score a chat model in the
tiny format by forgetting an argument. Chapters and commands start with::

    s = settings("ch1", PROFILE)
    lm = load_study(s)        # the model, its tokenizer, its prompt format
    world = load_tasks(s, lm)  # the profile's tasks, cut to what the model knows where asked
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from torch import nn

from ivedu.architectures import ModelLayout, model_layout
from ivedu.arguments import check_optional_path, check_path, check_str
from ivedu.gguf_models import file_sha256
from ivedu.prompts import QA_FORMAT, TINY_FORMAT, PromptFormat, chat_format
from ivedu.results import save_result
from ivedu.runtime import cache_home, peft_quietly
from ivedu.settings import Settings, TeachingSettings
from ivedu.world import SPLITS, Task, World


@dataclass(frozen=True)
class ModelUnderStudy:
    """``model`` (a Hugging Face causal LM, or a peft wrapper of one), its ``tokenizer`` and the
    prompt format ``fmt`` every prompt to it is written in; ``name``: what it was loaded as."""

    model: nn.Module
    tokenizer: object
    fmt: PromptFormat
    name: str = ""

    @property
    def layout(self) -> ModelLayout:
        """Where its layers, heads and projections are (:func:`ivedu.architectures.model_layout`)."""
        return model_layout(self.model)

    def with_model(self, model: nn.Module) -> "ModelUnderStudy":
        """The same tokenizer and format around another model, e.g. a fine-tuned copy."""
        return replace(self, model=model)


def prompt_format(settings: Settings, tokenizer) -> PromptFormat:
    """The tiny format for the tiny world; for a real model its own chat template (instruction,
    answer-length constraint, input), or Todd et al.'s ``Q:``/``A:`` lines without one."""
    return TINY_FORMAT if settings.data.world == "tiny" else chat_format(tokenizer, QA_FORMAT)


def load_original(settings: Settings) -> ModelUnderStudy:
    """The profile's model as loaded (:func:`ivedu.models.load_model`), before any
    instruction-tuning stage, with its tokenizer and prompt format."""
    from ivedu.models import load_model

    model, tokenizer = load_model(settings.model)
    return ModelUnderStudy(model, tokenizer, prompt_format(settings, tokenizer), settings.model)


def load_study(settings: Settings) -> ModelUnderStudy:
    """The model the profile studies, with its tokenizer and prompt format: :func:`load_original`,
    plus the profile's instruction-tuning stage merged into its weights where it has one
    (``settings.teaching``, trained by :mod:`ivedu.teaching`, checked and merged by
    :func:`apply_teaching`); its ``name`` then carries the stage's hash,
    so nothing cached for one model is read for the other."""
    lm = load_original(settings)
    if settings.teaching is None:
        return lm
    folder = stage_folder(settings.profile)
    digest = read_manifest(folder, settings.teaching)["adapter_sha256"]
    return replace(lm, model=apply_teaching(lm.model, folder, settings.teaching),
                   name=f"{settings.model}+taught-{digest[:12]}")


# ----------------------------------------------------------------------------- the shipped stage
# A profile's instruction-tuning stage is trained and saved by :mod:`ivedu.teaching`; loading it
# onto the original model is part of loading the study, so it is checked and merged here.

CHECKPOINTS = Path(__file__).parent / "checkpoints"
ADAPTER_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "ivedu_teaching.json"


class TeachingError(RuntimeError):
    """The shipped stage is missing, damaged, or was made with other settings than the profile's."""


def stage_folder(profile: str) -> Path:
    """Where the package keeps ``profile``'s stage: ``ivedu/checkpoints/<profile>-taught``."""
    check_str("profile", profile)
    return CHECKPOINTS / f"{profile}-taught"


def read_manifest(folder: Path, settings: TeachingSettings) -> dict:
    """The manifest of the stage in ``folder``, checked: present, made with ``settings``, and its
    adapter's SHA-256 the one it records. :class:`TeachingError` says what is wrong and which
    command regenerates the stage."""
    folder = Path(check_path("folder", folder))
    fix = f"regenerate it with `python -m ivedu.teaching --profile {folder.name.removesuffix('-taught')}`"
    if not (folder / MANIFEST_FILE).is_file() or not (folder / ADAPTER_FILE).is_file():
        raise TeachingError(f"the instruction-tuning stage is missing from {folder}; {fix}")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    if manifest.get("settings") != json.loads(json.dumps(asdict(settings))):
        raise TeachingError(f"the stage in {folder} was made with other settings ({manifest.get('settings')}) than "
                            f"the profile's ({asdict(settings)}); {fix}")
    digest = file_sha256(folder / ADAPTER_FILE)
    if digest != manifest.get("adapter_sha256"):
        raise TeachingError(f"{folder / ADAPTER_FILE} has SHA-256 {digest}, not the {manifest.get('adapter_sha256')} "
                            f"its manifest records: the file is damaged; {fix}")
    return manifest


def apply_teaching(model, folder: Path, settings: TeachingSettings):
    """``model`` with the checked stage of ``folder`` (:func:`read_manifest`) merged into its
    weights: a plain model again, the same class, on the same device and dtype."""
    from peft import PeftModel

    check_path("folder", folder)
    read_manifest(folder, settings)
    with peft_quietly():
        merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    # peft froze the base weights to train the adapter; merged, they are the model's own again,
    # trainable as in any model as loaded (full fine-tuning trains every one of them).
    return merged.requires_grad_(True).eval()


def load_tasks(settings: Settings, lm: ModelUnderStudy | None = None, cache_dir=None) -> World:
    """The profile's tasks: the tiny world, or a world of function-vector datasets.

    With ``settings.data.known_only`` the general tasks are cut to the examples ``lm`` answers
    right under their instruction (:func:`known_task`), and with ``settings.data.max_known`` to
    the first that many of each valid and test split (the splits are shuffled when a task is
    made); the new tasks stay whole.
    """
    check_optional_path("cache_dir", cache_dir)
    data = settings.data
    if data.world == "tiny":
        from ivedu.world import build_world

        world = build_world(data.world_seed)
    else:
        from ivedu.datasets import function_vector_world

        world = function_vector_world(data.general_tasks or (), data.sequence + data.control_sequence, cache_dir,
                                      max_examples=data.max_examples, seed=data.world_seed)
    if data.known_only:
        if lm is None:
            raise ValueError("these settings score only the examples the model knows: pass the model under study")
        world = replace(world, tasks=tuple(t if t.is_new else known_task(lm, t) for t in world.tasks))
    if data.max_known is not None:
        world = replace(world, tasks=tuple(t if t.is_new else replace(t, valid=t.valid[:data.max_known],
                                                                     test=t.test[:data.max_known])
                                           for t in world.tasks))
    return world


# The settings every study reads: the model, and which examples of which tasks it scores. A
# committed result is stale where these (or the settings its step reads) changed.
STUDY_READS = ("model", "teaching", "data.world", "data.world_seed", "data.general_tasks", "data.max_examples",
               "data.split", "data.k_shots", "data.known_only", "data.max_known")

# What :func:`known_task` caches depends on this rule; change it with the rule of
# :func:`ivedu.evaluation.known_examples` and every cached list is recomputed.
KNOWN_RULE = "greedy exact match of the normalised answer under instruction phrasing 0"


def known_cache_path(lm: ModelUnderStudy, task: Task) -> Path:
    """Where :func:`known_task` keeps ``task``'s known examples for ``lm``: a file named by a hash
    of the rule, the model's name and configuration, the prompt format and every example."""
    config = lm.model.config.to_json_string() if hasattr(lm.model, "config") else type(lm.model).__name__
    key = json.dumps({"rule": KNOWN_RULE, "model": lm.name, "config": config, "format": repr(lm.fmt),
                      "examples": {split: [[ex.input, ex.output] for ex in task.split(split)] for split in SPLITS},
                      "instructions": list(task.instructions)}, sort_keys=True)
    return cache_home() / "known" / f"{task.name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def known_task(lm: ModelUnderStudy, task: Task) -> Task:
    """``task`` cut to the examples ``lm`` answers right under its instruction
    (:func:`ivedu.evaluation.known_examples`), computed once per model, format and data.

    On a real model the filter is a greedy generation over every example (about a minute for a
    thousand examples on a 2-core CPU), the same for every chapter and command: it is kept as
    the kept positions per split (:func:`known_cache_path`), written atomically, and read back
    by later runs.
    """
    from ivedu.evaluation import known_examples

    path = known_cache_path(lm, task)
    if path.is_file():
        try:
            kept = json.loads(path.read_text())
            return replace(task, **{split: tuple(task.split(split)[i] for i in kept[split]) for split in SPLITS})
        except (ValueError, KeyError, IndexError, TypeError):
            pass  # unreadable: computed again and rewritten below
    known = known_examples(lm, task)
    kept = {split: _positions(task.split(split), known.split(split)) for split in SPLITS}
    save_result(kept, path)  # the atomic JSON write of results/, reused
    return known


def _positions(whole, kept) -> list[int]:
    """The positions in ``whole`` of the examples of ``kept``, a subsequence of it in order."""
    out, i = [], 0
    for ex in kept:
        while whole[i] != ex:
            i += 1
        out.append(i)
        i += 1
    return out


def general_tasks(settings: Settings, world: World) -> list:
    """The general tasks scored for forgetting: ``settings.data.general_tasks``, or all of the world's."""
    names = settings.data.general_tasks
    return list(world.general) if names is None else [world.task(n) for n in names]


def describe_tasks(settings: Settings, world: World) -> str:
    """One line per task of ``world``: its examples per split, and for general tasks under
    ``known_only`` that these are the examples the model answers right under its instruction
    (how many remain decides whether a task can serve as a general task at all)."""
    general = {t.name for t in general_tasks(settings, world)}
    lines = []
    for task in world.tasks:
        kind = "new" if task.is_new else "general"
        known = " (known examples only)" if settings.data.known_only and task.name in general else ""
        lines.append(f"{task.name:<24} {kind:<8} train {len(task.train):>4}  valid {len(task.valid):>4}  "
                     f"test {len(task.test):>4}{known}")
    return "\n".join(lines)
