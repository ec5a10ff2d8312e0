"""Runtime: dtype by compute capability, placement, the install line every chapter uses."""

import json
import sys
from pathlib import Path

import pytest
import torch

from ivedu import runtime
from ivedu.runtime import GpuInfo, dtype_for_capability, needs_device_map

BOOK = Path(__file__).parent.parent / "book"


@pytest.mark.parametrize("capability, dtype", [(None, torch.float32), ((7, 5), torch.float16),
                                               ((7, 0), torch.float16), ((8, 0), torch.bfloat16),
                                               ((9, 0), torch.bfloat16)])
def test_half_precision_is_chosen_by_compute_capability_not_by_emulated_bf16(capability, dtype):
    assert dtype_for_capability(capability) == dtype


def test_a_t4_gets_float16_even_though_it_reports_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))
    assert runtime.choose_dtype("cuda") == torch.float16
    assert runtime.choose_dtype("cpu") == torch.float32


def test_the_model_is_spread_only_over_several_gpus_or_when_it_does_not_fit_one():
    t4 = GpuInfo(0, "T4", 15 * 2**30, (7, 5))
    assert not needs_device_map(10 * 2**30, [])
    assert not needs_device_map(1 * 2**30, [t4])
    assert needs_device_map(14 * 2**30, [t4])
    assert needs_device_map(1 * 2**30, [t4, GpuInfo(1, "T4", 15 * 2**30, (7, 5))])


def test_the_description_names_device_dtype_and_profile():
    from ivedu.settings import settings
    text = runtime.describe_runtime(settings("ch2", "tiny"))
    assert "Colab:   no" in text and "profile: tiny" in text and "model tiny" in text
    assert "dtype:" in text and ("CPU only" in text or "GPU 0" in text)


def test_every_chapter_installs_ivedu_from_the_one_url_and_tag():
    assert runtime.install_command() == f'!pip install -q "ivedu @ git+{runtime.REPOSITORY_URL}@{runtime.RELEASE_TAG}"'
    for path in sorted(BOOK.glob("[0-9][0-9]_*.ipynb")):
        lines = [line.strip() for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"
                 for line in "".join(cell["source"]).splitlines() if "pip install" in line]
        assert lines, f"{path.name} has no Colab install line"
        assert all(line == runtime.install_command() for line in lines), (path.name, lines)


def test_a_gated_model_asks_for_a_hub_login_and_an_open_one_does_not(monkeypatch):
    import huggingface_hub

    assert runtime.hub_login("tiny") is None and runtime.hub_login("Qwen/Qwen2.5-0.5B-Instruct") is None
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_x")
    assert "token found" in runtime.hub_login("meta-llama/Llama-2-7b-chat-hf")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    with pytest.raises(RuntimeError, match="accept its licence.*huggingface-cli login"):
        runtime.hub_login("meta-llama/Llama-2-7b-chat-hf")


def test_every_chapter_logs_in_where_its_model_is_gated():
    for path in sorted(BOOK.glob("[0-9][0-9]_*.ipynb")):
        setup = next("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                     if c["cell_type"] == "code" and "runtime.describe_runtime" in "".join(c["source"]))
        assert "runtime.hub_login(settings.model)" in setup, path.name


def test_every_chapter_prints_its_measured_run_times():
    for path in sorted(BOOK.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        setup = next("".join(c["source"]) for c in cells
                     if c["cell_type"] == "code" and "runtime.describe_runtime" in "".join(c["source"]))
        assert "print(run_times(settings.chapter))" in setup, path.name
        assert "**Run time.** The set-up cell below prints" in "".join(cells[0]["source"]), path.name
