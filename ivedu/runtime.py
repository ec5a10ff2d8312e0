"""The machine a chapter runs on: where ivedu is installed from, which device and dtype, and a
one-paragraph description of it printed at the top of every chapter.

Four decisions live here and nowhere else:

- **where to install ivedu from on Colab**: :data:`REPOSITORY_URL` at :data:`RELEASE_TAG`
  (:func:`install_command` is the line every chapter's set-up cell runs);
- **the dtype**: float32 on the CPU, bfloat16 on GPUs that compute in it natively (compute
  capability 8.0 and up: A100, L4, H100), float16 on older ones. A T4 (7.5) *reports*
  ``torch.cuda.is_bf16_supported() == True`` because bf16 is emulated, slowly, so that
  flag is not asked: the capability is (:func:`dtype_for_capability`);
- **the placement**: one device when the weights fit one GPU, ``device_map="auto"`` (which
  needs the ``accelerate`` package, preinstalled on Colab) only when there are several GPUs
  or the weights do not fit the first one (:func:`needs_device_map`);
- **where ivedu keeps what it computes once per machine** (dequantised models, the known
  examples of a task, finished runs): ``$IVEDU_CACHE``, or ``~/.cache/ivedu`` (:func:`cache_home`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

# The public repository does not exist yet: this URL is a placeholder to be replaced by the
# real one when the repository is published. Every chapter's Colab cell installs from here,
# and tests/test_runtime.py checks that each chapter's install line equals install_command().
REPOSITORY_URL = "https://github.com/ivedu/ivedu"
RELEASE_TAG = "v0.1.0"

# Share of a GPU's memory the weights may take before the model is spread over several GPUs
# (or refused on one): the rest is for activations, the KV cache and the CUDA context.
WEIGHTS_SHARE_OF_GPU = 0.8


def install_spec() -> str:
    """The pip requirement for ivedu at its release tag: ``ivedu @ git+URL@TAG``."""
    return f"ivedu @ git+{REPOSITORY_URL}@{RELEASE_TAG}"


def install_command() -> str:
    """The notebook line that installs ivedu on Colab (an IPython ``!pip`` line)."""
    return f'!pip install -q "{install_spec()}"'


def cache_home() -> Path:
    """``$IVEDU_CACHE``, or ``~/.cache/ivedu``: where ivedu keeps what it computes once per machine."""
    return Path(os.environ.get("IVEDU_CACHE") or Path.home() / ".cache" / "ivedu")


def in_colab() -> bool:
    """Whether this Python runs inside Google Colab (its ``google.colab`` module is loaded)."""
    return "google.colab" in sys.modules


# Hub models that need an accepted licence and a logged-in token (the paper profile's Llama-2).
GATED_PREFIXES = ("meta-llama/",)


def hub_login(model: str) -> str | None:
    """Log in to the Hugging Face hub before loading ``model``, if it is gated; else do nothing.

    Llama-2 is gated: accept its licence on its hub page with your account, then this asks for
    a token once (a login box in Colab or Jupyter, :func:`huggingface_hub.notebook_login`) unless
    one is saved already or set in ``$HF_TOKEN``. Outside a notebook it raises with the command
    to run instead. Returns what it did, or ``None`` for an ungated model.
    """
    if not model.startswith(GATED_PREFIXES):
        return None
    from huggingface_hub import get_token

    if get_token():
        return f"{model} is gated: using the hub token found on this machine"
    if in_colab() or "ipykernel" in sys.modules:
        from huggingface_hub import notebook_login

        notebook_login()
        return f"{model} is gated: logged in to the hub"
    raise RuntimeError(f"{model} is gated on the Hugging Face hub: accept its licence on "
                       f"https://huggingface.co/{model}, then run `huggingface-cli login` or set HF_TOKEN")


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_for_capability(capability: tuple[int, int] | None) -> torch.dtype:
    """The dtype to compute in on a device of CUDA compute ``capability`` (``None``: the CPU).

    float32 on the CPU (half precision is slow there and the tiny model is small);
    bfloat16 from capability 8.0 on (Ampere and later compute it natively); float16 below,
    e.g. on a T4 (7.5), which emulates bf16 although ``torch.cuda.is_bf16_supported()``
    says it supports it.
    """
    if capability is None:
        return torch.float32
    return torch.bfloat16 if capability[0] >= 8 else torch.float16


def choose_dtype(device: str | torch.device) -> torch.dtype:
    """:func:`dtype_for_capability` of ``device`` (a CPU or a CUDA device)."""
    device = torch.device(device)
    if device.type != "cuda":
        return dtype_for_capability(None)
    return dtype_for_capability(torch.cuda.get_device_capability(device))


@dataclass(frozen=True)
class GpuInfo:
    """One visible GPU: its name, memory in bytes and CUDA compute capability."""

    index: int
    name: str
    memory_bytes: int
    capability: tuple[int, int]

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30


def visible_gpus() -> list[GpuInfo]:
    """Every CUDA GPU this process can use (empty on a CPU-only machine)."""
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(GpuInfo(i, props.name, int(props.total_memory), (props.major, props.minor)))
    return gpus


def needs_device_map(weight_bytes: int, gpus: list[GpuInfo]) -> bool:
    """Whether a model of ``weight_bytes`` should be spread with ``device_map="auto"``.

    Yes when there are several GPUs (use them all) or when the weights take more than
    :data:`WEIGHTS_SHARE_OF_GPU` of the first GPU's memory; no on one GPU the model fits,
    where a plain ``.to("cuda")`` is simpler and needs no ``accelerate``.
    """
    if not gpus:
        return False
    return len(gpus) > 1 or weight_bytes > WEIGHTS_SHARE_OF_GPU * gpus[0].memory_bytes


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def describe_runtime(settings=None) -> str:
    """A few lines saying where this chapter runs: Colab or not, GPU(s) and memory, the dtype
    models are loaded in, and the profile with its model (``settings`` from
    :func:`ivedu.settings.settings`, or a profile name, or ``None``).

    Printed by every chapter's set-up cell, so that a reader's numbers can be matched with
    the machine that made them.
    """
    gpus = visible_gpus()
    lines = [f"Colab:   {'yes' if in_colab() else 'no'}",
             f"Python {platform.python_version()} · torch {torch.__version__}"]
    if gpus:
        for gpu in gpus:
            lines.append(f"GPU {gpu.index}:   {gpu.name}, {gpu.memory_gib:.1f} GiB, "
                         f"compute capability {gpu.capability[0]}.{gpu.capability[1]}")
    else:
        lines.append(f"device:  CPU only ({os.cpu_count()} cores visible, "
                     f"{torch.get_num_threads()} torch threads)")
    dtype = choose_dtype(default_device())
    why = {torch.float32: "CPU", torch.bfloat16: "native bf16 (compute capability >= 8)",
           torch.float16: "no native bf16 (compute capability < 8)"}[dtype]
    lines.append(f"dtype:   {dtype_name(dtype)} for hub models ({why}); the tiny model stays float32 on the CPU")
    if settings is not None:
        if isinstance(settings, str):
            lines.append(f"profile: {settings}")
        else:
            lines.append(f"profile: {settings.profile} · chapter {settings.chapter} · model {settings.model}")
    return "\n".join(lines)


# -- how many bytes a model's weights take (counted on the meta device, no memory) ----------

BYTES_PER_PARAMETER = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}

def meta_model(config: PretrainedConfig) -> torch.nn.Module:
    """The model of ``config`` on the meta device: every shape, no memory, no initialisation cost."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def count_parameters(config: PretrainedConfig) -> int:
    """Exact parameter count of the model ``config`` describes (tied weights counted once)."""
    return sum(p.numel() for p in meta_model(config).parameters())


def bytes_per_parameter(dtype: torch.dtype) -> int:
    """Bytes one parameter takes in ``dtype``; ``ValueError`` for a dtype not tabulated."""
    if dtype not in BYTES_PER_PARAMETER:
        raise ValueError(f"no byte size for {dtype}; use one of {list(BYTES_PER_PARAMETER)}")
    return BYTES_PER_PARAMETER[dtype]


def weight_bytes(config: PretrainedConfig, dtype: torch.dtype) -> int:
    """Bytes of the model's weights in ``dtype``."""
    return count_parameters(config) * bytes_per_parameter(dtype)


@contextlib.contextmanager
def peft_quietly():
    """Wrap a model with peft without transformers' deprecation notice on the way: peft reads
    ``is_gradient_checkpointing``, which transformers 5 deprecates; nothing a reader can act on,
    and a chapter's page would show it as an error-coloured output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
