"""The one settings module: per-step settings for every profile x chapter, and derived seeds."""

import ast
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest

from ivedu import settings as S
from ivedu.settings import ExtractionSettings, FinetuneSettings, settings, sub_seed


def test_the_tiny_profile_keeps_the_chapters_values():
    s = settings("ch1", "tiny")
    assert s.seeds == (0, 1, 2) and settings("ch2", "tiny").seeds == (0,)
    assert s.finetune == FinetuneSettings(batch_size=16, max_steps=600, stop_at=0.9, eval_every=25,
                                          schedule="constant", warmup_steps=10, lr_full=3e-4, lr_lora=1e-3,
                                          lora_rank=8, lora_alpha=16)
    assert (s.finetune.lr("lora"), s.finetune.lr("full")) == (1e-3, 3e-4)
    assert s.extraction == ExtractionSettings()
    assert s.data.sequence == ("first_french", "last_french", "middle") and s.data.new_task == "first_french"
    assert (s.guided.loss.kl_start, s.guided.loss.layer, s.guided.vector_heads) == (1.0, 0, 2)


def test_settings_are_frozen():
    with pytest.raises(FrozenInstanceError):
        settings("ch1", "tiny").finetune.max_steps = 3


def test_the_profile_comes_from_the_environment_by_default(monkeypatch):
    monkeypatch.delenv(S.ENV_VAR, raising=False)
    assert settings("ch2").profile == "tiny"
    monkeypatch.setenv(S.ENV_VAR, "colab")
    assert settings("ch2").model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert settings("ch2", "paper").model == "meta-llama/Llama-2-7b-chat-hf"


@pytest.mark.parametrize("profile", S.PROFILES)
@pytest.mark.parametrize("chapter", S.CHAPTERS)
def test_every_chapter_has_consistent_settings_in_every_profile(chapter, profile):
    s = settings(chapter, profile)
    assert (s.chapter, s.profile) == (chapter, profile)
    assert s.data.new_task == s.data.sequence[0] and len(s.data.sequence) == 3
    x = s.extraction
    assert x.head_counts and x.scales and x.n_prompts > 0 and s.finetune.batch_size > 0
    for layers in (x.layers, s.dynamics.layers):
        assert layers is None or list(layers) == sorted(set(layers))
    if profile != "tiny":
        from ivedu.datasets import TASKS
        assert set(s.data.general_tasks) | set(s.data.sequence) <= set(TASKS)
        assert not set(s.data.general_tasks) & set(s.data.sequence)
        assert s.data.known_only


def test_no_tiny_constant_reaches_a_real_profile():
    tiny = settings("ch4", "tiny")
    for profile in ("smol", "colab", "paper"):
        s = settings("ch4", profile)
        assert s.guided.loss.layer != tiny.guided.loss.layer and s.guided.vector_heads != tiny.guided.vector_heads
        assert s.dynamics.layers is not None and s.dynamics.heads != tiny.dynamics.heads
        assert s.dynamics.overlay_layer in s.dynamics.layers
        assert s.finetune.lr_lora != tiny.finetune.lr_lora


def test_real_profiles_fit_their_gpu_and_bound_the_sweep_inside_the_model():
    from ivedu.costs import GPUS, model_config
    for profile in ("colab", "paper"):
        s = settings("ch2", profile)
        config = model_config(s.model)
        assert s.gpu in GPUS
        for layers in (s.extraction.layers, s.dynamics.layers, (s.guided.loss.layer,)):
            assert s.extraction.sweep_layers(config.num_hidden_layers) and max(layers) < config.num_hidden_layers
        assert max(s.extraction.head_counts) < config.num_hidden_layers * config.num_attention_heads


def test_chapter_5_times_a_known_amount_of_work_and_live_sizes_stay_out_of_the_commands():
    assert settings("ch5", "tiny").finetune.max_steps == 100, "the tiny chapter's timing: 100 steps, as written"
    smol = settings("ch5", "smol")
    assert smol.finetune.max_steps == 20 and len(smol.extraction.layers) * len(smol.extraction.scales) == 2
    assert settings("ch2", "smol").extraction.layers == (9, 12, 15), "only chapter 5 times a smaller sweep"
    for profile in S.PROFILES:
        s = settings("ch3", profile)
        assert settings("ch4", profile).live.guided_methods, "chapter 4 trains at least one method live"
        live_diagnosis = settings("ch1", profile).live.diagnosis_methods
        assert live_diagnosis is None or "full" in live_diagnosis, "chapter 1's worked fine-tuning is scored live"
        live = s.live.restoration(s.dynamics)
        assert set(live.layers or ()) <= set(s.dynamics.layers or ()) and set(live.scales) <= set(s.dynamics.scales), \
            "a chapter restores live within the command's grid"
    assert settings("ch3", "tiny").live.restoration(settings("ch3", "tiny").dynamics) == settings("ch3", "tiny").dynamics
    from ivedu.experiments import EXPERIMENTS, settings_read
    for name, (_, chapter) in EXPERIMENTS.items():
        assert chapter != "ch5" and not any(r.startswith("live") for r in settings_read(name, settings(chapter)))


def test_overrides_replace_one_field_and_unknown_names_are_refused():
    s = settings("ch2", "colab", model="Qwen/Qwen2.5-1.5B-Instruct")
    assert s.model == "Qwen/Qwen2.5-1.5B-Instruct" and s.gpu == "T4"
    short = settings("ch1", "tiny", finetune=replace(FinetuneSettings(), max_steps=5))
    assert short.finetune.max_steps == 5
    with pytest.raises(ValueError, match=r"unknown settings \['n_promts'\].*extraction"):
        settings("ch2", "colab", n_promts=3)
    with pytest.raises(ValueError, match="unknown profile 'laptop'.*IVEDU_PROFILE"):
        settings("ch2", "laptop")
    with pytest.raises(ValueError, match="unknown chapter 'ch9'"):
        settings("ch9", "tiny")


def test_layers_outside_the_model_are_refused_with_the_fix():
    assert ExtractionSettings().sweep_layers(4) == (0, 1, 2, 3)
    assert ExtractionSettings(layers=(1, 3)).sweep_layers(4) == (1, 3)
    with pytest.raises(ValueError, match="subset of 0..3.*layers=None"):
        ExtractionSettings(layers=(2, 4)).sweep_layers(4)
    with pytest.raises(ValueError, match="subset"):
        settings("ch3", "smol").dynamics.restore_layers(8)


def test_sub_seeds_are_the_documented_ones_and_never_collide():
    assert sub_seed(0, 2) == 2 and sub_seed(3, 1) == 3001 and sub_seed(2, "capital") == "2:capital"
    assert len({sub_seed(s, p) for s in range(5) for p in range(5)}) == 25
    with pytest.raises(ValueError, match="0..999"):
        sub_seed(1, 1000)


def test_the_settings_module_imports_nothing_of_ivedu():
    """Nothing but the argument checks, which themselves import nothing of ivedu."""
    def package_imports(path):
        tree = ast.parse(Path(path).read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        return {m for m in imported if m and m.startswith("ivedu")}

    assert package_imports(S.__file__) <= {"ivedu.arguments"}
    assert not package_imports(Path(S.__file__).with_name("arguments.py"))


def test_describe_names_every_step():
    text = settings("ch2", "smol").describe()
    for key in ("model", "data.general_tasks", "finetune.lr_lora", "extraction.layers", "dynamics.heads",
                "guided.loss"):
        assert key in text


def test_no_profile_trains_a_task_related_to_one_of_its_general_tasks():
    from ivedu.settings import FV_RELATED, PROFILES, related_pairs

    for profile in PROFILES:
        s = settings("ch1", profile)
        new = (s.data.new_task,) + s.data.sequence + s.data.control_sequence
        assert related_pairs(s.data.general_tasks or (), new, FV_RELATED) == [], profile


def test_a_sequence_task_related_to_a_general_task_is_refused_when_the_settings_are_made():
    from dataclasses import replace

    from ivedu.settings import FV_RELATED, related_pairs

    data = settings("ch1", "smol").data
    with pytest.raises(ValueError, match="lowercase_first_letter ~ capitalize"):
        replace(data, new_task="lowercase_first_letter", sequence=("lowercase_first_letter", "next_item"))
    with pytest.raises(ValueError, match="prev_item ~ next_item"):
        replace(data, general_tasks=("next_item",), new_task="prev_item", sequence=("prev_item",))
    assert related_pairs(("antonym",), ("synonym", "word_length"), FV_RELATED) == [("synonym", "antonym")]
    assert related_pairs(("antonym",), ("antonym",), ()) == [("antonym", "antonym")]


def test_a_world_of_general_tasks_alone_is_allowed_as_the_task_survey_builds_it():
    data = settings("ch1", "smol").data
    alone = replace(data, general_tasks=("antonym", "capitalize"), new_task="", sequence=(), control_sequence=(),
                    related=())
    assert alone.new_task == "" and alone.sequence == ()
