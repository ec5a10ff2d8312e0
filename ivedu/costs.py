"""What each step of the method costs on a real model, by arithmetic: parameters, memory, time.

Chapter 5 needs the time and GPU memory of each step (scan, vector, intervention sweep,
fine-tuning, guided training) for every profile, including models this machine cannot run.
Where no GPU is at hand the numbers come from here, and are labelled *estimates*:

- **parameters** are counted exactly from the model's config, by building the model on
  PyTorch's ``meta`` device (shapes, no memory) -- :func:`count_parameters`;
- **memory** is bytes per parameter: the weights in the dtype for inference, and for every
  *trained* parameter the 16 bytes of mixed-precision AdamW (half-precision weights and
  gradients, float32 master weights and two float32 moments: Rajbhandari et al.'s ZeRO
  accounting), plus the KV cache of a scan pass and the activations and logits of a
  training batch;
- **time** is a roofline: a pass takes at least its FLOPs over the GPU's usable compute
  (2 x parameters per token forward, 6 x for full training, 4 x for LoRA, which computes no
  weight gradients for frozen weights) and at least its bytes read over the usable memory
  bandwidth (every weight once per pass, which dominates the small batches of short prompts).

The GPU figures are datasheet peaks times an assumed efficiency (:data:`COMPUTE_EFFICIENCY`,
:data:`BANDWIDTH_EFFICIENCY`); real runs can be faster or slower by a small factor. The
configs of the profiles' hub models are written out in :data:`HUB_CONFIGS` (their sizes from
the models' published ``config.json``), so no download is needed to count them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import AutoConfig, PretrainedConfig

from ivedu.arguments import check_int, check_mapping, check_number, check_positive_int, check_str, check_strs
# The weight arithmetic lives in runtime (models needs it too); costs uses it and re-exports it.
from ivedu.runtime import (BYTES_PER_PARAMETER, bytes_per_parameter, count_parameters,  # noqa: F401
                           meta_model, weight_bytes)
from ivedu.settings import Settings

# A parameter trained with mixed-precision AdamW: 2 (weight) + 2 (gradient) + 4 (float32
# master copy) + 4 + 4 (the two moments).
TRAINED_BYTES_PER_PARAMETER = 16

# Sizes from each model's published config.json; enough to rebuild it on the meta device.
HUB_CONFIGS: dict[str, dict] = {
    "Qwen/Qwen2.5-0.5B-Instruct": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864,
                                       num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                       vocab_size=151936, max_position_embeddings=32768,
                                       tie_word_embeddings=True),
    "Qwen/Qwen2.5-1.5B-Instruct": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960,
                                       num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                                       vocab_size=151936, max_position_embeddings=32768,
                                       tie_word_embeddings=True),
    "meta-llama/Llama-2-7b-chat-hf": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                                          num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                          vocab_size=32000, max_position_embeddings=4096,
                                          tie_word_embeddings=False),
}

# Assumed share of a GPU's datasheet peak that a real run reaches: matrix multiplies of the
# sizes here rarely pass a third of peak; streaming weights reaches most of the bandwidth.
COMPUTE_EFFICIENCY = 0.35
BANDWIDTH_EFFICIENCY = 0.7


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's datasheet figures: memory, dense half-precision tensor peak and memory bandwidth."""

    name: str
    memory_gib: float
    peak_tflops: float
    bandwidth_gbs: float
    dtype: torch.dtype

    def __post_init__(self):
        check_str("name", self.name)
        check_number("memory_gib", self.memory_gib, above=0.0)
        check_number("peak_tflops", self.peak_tflops, above=0.0)
        check_number("bandwidth_gbs", self.bandwidth_gbs, above=0.0)

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)


GPUS: dict[str, GpuSpec] = {
    # Colab's free GPU: 16 GB card, 15 GiB usable; 65 TFLOPS fp16 tensor cores; no native bf16.
    "T4": GpuSpec("NVIDIA T4 (Colab free tier)", 15.0, 65.0, 320.0, torch.float16),
    "A100-80GB": GpuSpec("NVIDIA A100 80GB SXM", 80.0, 312.0, 2039.0, torch.bfloat16),
    "H100-80GB": GpuSpec("NVIDIA H100 80GB SXM", 80.0, 989.0, 3350.0, torch.bfloat16),
}


def model_config(name: str) -> PretrainedConfig:
    """The config of ``name``: the shipped tiny model, a model of :data:`HUB_CONFIGS` (built
    locally, no download) or any other hub id or folder (``AutoConfig.from_pretrained``)."""
    check_str("name", name)
    if name == "tiny":
        from ivedu.models import TINY_CHECKPOINT  # costs sits above models; models never imports costs

        return AutoConfig.from_pretrained(TINY_CHECKPOINT)
    if name in HUB_CONFIGS:
        sizes = dict(HUB_CONFIGS[name])
        return AutoConfig.for_model(sizes.pop("model_type"), **sizes)
    return AutoConfig.from_pretrained(name)


def lora_parameters(config: PretrainedConfig, rank: int, target_modules: tuple[str, ...] | None = None) -> int:
    """Trainable parameters of LoRA adapters of ``rank``: ``rank * (in + out)`` per adapted linear.

    ``target_modules`` are last-name parts (``("q_proj", "v_proj")``); ``None`` adapts every
    linear layer but the output head, as :func:`ivedu.finetune.linear_module_names` does.
    """
    check_positive_int("rank", rank)
    if target_modules is not None:
        check_strs("target_modules", target_modules, unique=True)
    model = meta_model(config)
    head = model.get_output_embeddings()
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            if target_modules is None or name.rsplit(".", 1)[-1] in target_modules:
                total += rank * (module.in_features + module.out_features)
    return total


@dataclass(frozen=True)
class Shape:
    """The sizes of a model that the cost formulas need."""

    parameters: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int

    @classmethod
    def of(cls, config: PretrainedConfig) -> "Shape":
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(count_parameters(config), config.num_hidden_layers, heads, kv_heads, head_dim,
                   config.hidden_size, config.vocab_size)

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Keys and values of one token in every layer: ``2 * layers * kv_heads * head_dim`` values."""
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_parameter(dtype)

    def activation_bytes(self, batch: int, seq: int, dtype: torch.dtype) -> int:
        """Activations kept for the backward pass of a ``[batch, seq]`` training batch.

        Korthikanti et al. (2022)'s count for a transformer block without recomputation,
        ``seq * batch * hidden * (34 + 5 * heads * seq / hidden)`` bytes in 16-bit, per layer
        (scaled by 2 in float32), plus the float32 logits and their softmax over the vocabulary,
        which dominate for short sequences and large vocabularies (Qwen's 152k).
        """
        check_positive_int("batch", batch)
        check_positive_int("seq", seq)
        per_layer = seq * batch * self.hidden * (34 + 5 * self.heads * seq / self.hidden)
        scale = bytes_per_parameter(dtype) / 2
        logits = 2 * batch * seq * self.vocab * 4
        return int(self.layers * per_layer * scale + logits)


@dataclass(frozen=True)
class StepCost:
    """One step of the method on one GPU: FLOPs, bytes streamed, peak memory and time.

    ``seconds`` is the roofline time (the larger of compute time and memory time); ``fits``
    whether ``memory_bytes`` fits the GPU; ``basis`` says where the numbers come from.
    """

    step: str
    flops: float
    bytes_read: float
    memory_bytes: int
    seconds: float
    fits: bool
    basis: str = "estimate (arithmetic)"

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30


def training_state_bytes(config: PretrainedConfig, method: str, lora_rank: int = 8,
                         lora_targets: tuple[str, ...] | None = None, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of weights, gradients and AdamW states to fine-tune the model of ``config``,
    activations left out: :data:`TRAINED_BYTES_PER_PARAMETER` for every trained parameter
    (mixed precision: the 16 include the weight's own bytes) -- every parameter for ``"full"``;
    for ``"lora"`` the frozen weights in ``dtype`` plus the adapters
    (:func:`lora_parameters`)."""
    if method not in ("lora", "full"):
        raise ValueError(f"unknown method {method!r}; choose 'lora' or 'full'")
    check_positive_int("lora_rank", lora_rank)
    n = count_parameters(config)
    if method == "full":
        return TRAINED_BYTES_PER_PARAMETER * n
    return n * bytes_per_parameter(dtype) + TRAINED_BYTES_PER_PARAMETER * lora_parameters(config, lora_rank, lora_targets)


def roofline_seconds(flops: float, bytes_read: float, gpu: GpuSpec) -> float:
    """Time at the larger of the compute bound and the memory bound, at the assumed efficiencies."""
    check_number("flops", flops, 0.0)
    check_number("bytes_read", bytes_read, 0.0)
    compute = flops / (gpu.peak_tflops * 1e12 * COMPUTE_EFFICIENCY)
    memory = bytes_read / (gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY)
    return max(compute, memory)


@dataclass(frozen=True)
class Workload:
    """How much each step does, from a profile's settings (:func:`workload`).

    ``prompt_tokens`` and ``answer_tokens`` are typical lengths in the model's tokens;
    ``sweep_layers`` x ``head_counts`` x ``scales`` settings are tried on ``n_valid``
    prompts per task; ``steps`` of ``batch_size`` sequences train each task.
    """

    n_tasks: int
    n_prompts: int
    prompt_tokens: int
    answer_tokens: int
    sweep_layers: int
    head_counts: int
    scales: int
    n_valid: int
    n_test: int
    n_random: int
    steps: int
    batch_size: int
    lora_rank: int
    lora_targets: tuple[str, ...] | None = None
    scan_rows_per_pass: int = 512

    def __post_init__(self):
        for name in ("n_tasks", "n_prompts", "prompt_tokens", "answer_tokens", "sweep_layers", "head_counts", "scales",
                     "n_valid", "n_test", "steps", "batch_size", "lora_rank", "scan_rows_per_pass"):
            check_positive_int(name, getattr(self, name))
        check_int("n_random", self.n_random, 0)
        if self.lora_targets is not None:
            check_strs("lora_targets", self.lora_targets, unique=True)


def _passes(rows: int, rows_per_pass: int) -> int:
    return max(1, math.ceil(rows / rows_per_pass))


def step_costs(config: PretrainedConfig, work: Workload, gpu: GpuSpec, dtype: torch.dtype | None = None,
               method: str = "lora") -> list[StepCost]:
    """Estimated cost of every step of the pipeline for ``config`` on ``gpu``.

    ``method`` (``"lora"`` or ``"full"``) is the fine-tuning of the last two steps. The
    forward passes are batched as ivedu batches them: 128 prompts per pass for scoring,
    ``scan_rows_per_pass`` patched rows per pass for the scan.
    """
    if method not in ("lora", "full"):
        raise ValueError(f"unknown method {method!r}; choose 'lora' or 'full'")
    dtype = dtype or gpu.dtype
    shape = Shape.of(config)
    n, b = shape.parameters, bytes_per_parameter(dtype)
    weights = n * b
    prompt, answer = work.prompt_tokens, work.answer_tokens
    costs = []

    def add(step: str, flops: float, passes: int, extra_memory: int) -> None:
        bytes_read = passes * weights
        memory = weights + extra_memory
        costs.append(StepCost(step, flops, bytes_read, memory, roofline_seconds(flops, bytes_read, gpu),
                              memory <= gpu.memory_bytes))

    # Scan: clean means (a pass over the prompts), then the corrupted prefix once and every
    # (layer, head) patch as one last-token row reading a copy of the prefix's KV cache.
    rows = work.n_prompts * shape.layers * shape.heads
    scan_tokens = work.n_tasks * (2 * work.n_prompts * prompt + rows)
    scan_passes = work.n_tasks * (2 * _passes(work.n_prompts, 128) + _passes(rows, work.scan_rows_per_pass))
    cache = min(rows, work.scan_rows_per_pass) * prompt * shape.kv_bytes_per_token(dtype)
    add("scan (causal mediation)", 2 * n * scan_tokens, scan_passes, cache)

    # Vector: one projection of the chosen heads' means per task: a few matrix-vector products.
    add("vector (sum of top heads)", work.n_tasks * 2 * shape.layers * shape.heads * shape.head_dim * shape.hidden,
        0, 0)

    # Sweep: first-token accuracy on the valid prompts for each (k, layer, scale).
    settings = work.sweep_layers * work.head_counts * work.scales
    sweep_tokens = work.n_tasks * settings * work.n_valid * prompt
    sweep_passes = work.n_tasks * settings * _passes(work.n_valid, 128)
    # Test: clean, bare, IV, other task and each random vector; first token plus greedy
    # decoding without a KV cache (answer + 1 steps, each re-running the prefix).
    conditions = 4 + work.n_random
    decode_tokens = sum(prompt + i for i in range(answer + 1))
    test_tokens = work.n_tasks * conditions * work.n_test * (prompt + decode_tokens)
    test_passes = work.n_tasks * conditions * (answer + 2) * _passes(work.n_test, 64)
    logits = 128 * prompt * shape.vocab * 4
    add("intervention sweep + test", 2 * n * (sweep_tokens + test_tokens), sweep_passes + test_passes, logits)

    # Fine-tuning: steps of batch_size sequences. A trained parameter costs 16 bytes in
    # mixed precision (the weights' 2 are already counted, the rest is state): every weight
    # for full fine-tuning, only the adapters for LoRA (whose frozen weights stay as loaded).
    seq = prompt + answer + 1
    train_tokens = work.steps * work.batch_size * seq
    trainable = n if method == "full" else lora_parameters(config, work.lora_rank, work.lora_targets)
    flops_per_token = 6 * n if method == "full" else 4 * n + 6 * trainable
    state = training_state_bytes(config, method, work.lora_rank, work.lora_targets, dtype) - weights
    activations = shape.activation_bytes(work.batch_size, seq, dtype)
    add(f"fine-tuning ({method})", flops_per_token * train_tokens, 3 * work.steps, state + activations)

    # Guided training: the same student step plus a frozen teacher's forward pass on the
    # same batch (with the vector added). Full: the teacher is a second copy of the weights;
    # LoRA: the same weights with the adapter switched off.
    teacher = weights if method == "full" else 0
    add(f"guided training ({method})", (flops_per_token + 2 * n) * train_tokens, 4 * work.steps,
        state + activations + teacher + 2 * work.batch_size * seq * shape.vocab * 4)
    return costs


def workload(settings: Settings, n_layers: int, n_valid: int = 60, n_test: int = 60,
             answer_tokens: int = 3) -> Workload:
    """How much each step does under a profile's settings, for a model of ``n_layers`` (the
    sweep covers the profile's ``layers`` or all of them)."""
    for name, value in (("n_layers", n_layers), ("n_valid", n_valid), ("n_test", n_test),
                        ("answer_tokens", answer_tokens)):
        check_positive_int(name, value)
    general = settings.data.general_tasks
    x, f = settings.extraction, settings.finetune
    return Workload(n_tasks=len(general) if general is not None else 10, n_prompts=x.n_prompts,
                    prompt_tokens=settings.prompt_tokens, answer_tokens=answer_tokens,
                    sweep_layers=len(x.sweep_layers(n_layers)), head_counts=len(x.head_counts), scales=len(x.scales),
                    n_valid=n_valid, n_test=n_test, n_random=x.n_random, steps=f.max_steps, batch_size=f.batch_size,
                    lora_rank=f.lora_rank, lora_targets=f.lora_targets)


def profile_estimates(settings: Settings) -> list[StepCost]:
    """Every step's estimated cost under a profile's settings, on the profile's GPU.

    The scan, vector and sweep rows once; fine-tuning and guided training for LoRA and for
    full fine-tuning. ``ValueError`` for a profile sized for no GPU (the tiny one, which is
    measured instead).
    """
    if settings.gpu is None:
        raise ValueError(f"profile {settings.profile!r} is sized for the CPU: measure it with measure_pipeline")
    config = model_config(settings.model)
    work = workload(settings, config.num_hidden_layers)
    gpu = GPUS[settings.gpu]
    lora = step_costs(config, work, gpu, method="lora")
    full = step_costs(config, work, gpu, method="full")
    return lora + full[3:]


def format_costs(rows: dict[str, list[StepCost]]) -> str:
    """A plain-text table of ``{label: [StepCost, ...]}``: time, memory, whether it fits, basis."""
    check_mapping("rows", rows, "profile")
    header = f"{'profile':<28}{'step':<30}{'time':>10}{'memory':>12}  {'fits':<5} basis"
    lines = [header, "-" * len(header)]
    for label, costs in rows.items():
        for c in costs:
            memory = f"{c.memory_gib:.2f} GiB" if c.memory_bytes else "-"
            lines.append(f"{label:<28}{c.step:<30}{_duration(c.seconds):>10}{memory:>12}  "
                         f"{'yes' if c.fits else 'NO':<5} {c.basis}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"
