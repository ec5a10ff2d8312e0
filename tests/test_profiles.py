"""Profiles: the tiny profile is the chapters' own defaults; the others change only settings."""

import pytest

from ivedu import profiles
from ivedu.experiments.diagnosis import SETTINGS
from ivedu.extraction import ExtractionSettings
from ivedu.prompts import QA_FORMAT, TINY_FORMAT, ChatFormat
from ivedu.tokenizer import build_tokenizer


def test_the_tiny_profile_is_what_the_chapters_already_use():
    assert profiles.settings("ch1", "tiny").diagnosis() == SETTINGS
    assert profiles.settings("ch2", "tiny").extraction() == ExtractionSettings()
    assert profiles.settings("ch1", "tiny").seeds == (0, 1, 2)


def test_the_profile_comes_from_the_environment_by_default(monkeypatch):
    monkeypatch.delenv(profiles.ENV_VAR, raising=False)
    assert profiles.settings("ch2").profile == "tiny"
    monkeypatch.setenv(profiles.ENV_VAR, "colab")
    assert profiles.settings("ch2").model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert profiles.settings("ch2", "paper").model == "meta-llama/Llama-2-7b-chat-hf"


@pytest.mark.parametrize("profile", profiles.PROFILES)
@pytest.mark.parametrize("chapter", profiles.CHAPTERS)
def test_every_chapter_has_consistent_settings_in_every_profile(chapter, profile):
    s = profiles.settings(chapter, profile)
    assert (s.chapter, s.profile) == (chapter, profile)
    assert s.new_task == s.sequence[0] and len(s.sequence) == 3
    assert s.head_counts and s.scales and s.n_prompts > 0 and s.batch_size > 0
    assert s.layers is None or list(s.layers) == sorted(set(s.layers))
    assert s.diagnosis()["methods"]["lora"]["lr"] == s.lr_lora
    assert s.extraction().head_counts == s.head_counts
    if profile != "tiny":
        from ivedu.datasets import TASKS
        assert set(s.general_tasks) | set(s.sequence) <= set(TASKS)
        assert not set(s.general_tasks) & set(s.sequence)


def test_real_profiles_fit_their_gpu_and_bound_the_sweep_inside_the_model():
    from ivedu.costs import GPUS, model_config
    for profile in ("colab", "paper"):
        s = profiles.settings("ch2", profile)
        config = model_config(s.model)
        assert s.gpu in GPUS
        assert max(s.layers) < config.num_hidden_layers
        assert max(s.head_counts) < config.num_hidden_layers * config.num_attention_heads


def test_overrides_replace_one_field_and_unknown_names_are_refused():
    s = profiles.settings("ch2", "colab", model="Qwen/Qwen2.5-1.5B-Instruct")
    assert s.model == "Qwen/Qwen2.5-1.5B-Instruct" and s.gpu == "T4"
    with pytest.raises(ValueError, match=r"unknown settings \['n_promts'\].*n_prompts"):
        profiles.settings("ch2", "colab", n_promts=3)
    with pytest.raises(ValueError, match="unknown profile 'laptop'.*IVEDU_PROFILE"):
        profiles.settings("ch2", "laptop")
    with pytest.raises(ValueError, match="unknown chapter 'ch9'"):
        profiles.settings("ch9", "tiny")


def test_the_prompt_format_follows_the_profile_and_the_tokenizer():
    plain = build_tokenizer("a b".split())
    assert profiles.settings("ch2", "tiny").prompt_format(plain) is TINY_FORMAT
    assert profiles.settings("ch2", "colab").prompt_format(plain) is QA_FORMAT
    chat = build_tokenizer("a b".split())
    chat.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</>{% endfor %}<assistant>"
    fmt = profiles.settings("ch2", "paper").prompt_format(chat)
    assert isinstance(fmt, ChatFormat)
    assert (fmt.head, fmt.user_end, fmt.turn_end, fmt.open_turn) == ("<user>", "</><assistant>", "</><user>", "</><assistant>")


def test_the_tiny_profile_loads_the_tiny_model_and_world():
    s = profiles.settings("ch2", "tiny")
    model, tokenizer = s.load_model()
    world = s.load_world()
    assert model.config.hidden_size == 128 and len(world.general) == 10
    assert "tiny" in s.describe() and "n_prompts" in s.describe()
