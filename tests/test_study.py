"""The model under study: model, tokenizer and prompt format together, from the profile."""

import pytest

from ivedu.prompts import QA_FORMAT, TINY_FORMAT, ChatFormat
from ivedu.settings import settings
from ivedu.study import ModelUnderStudy, general_tasks, load_study, load_tasks, prompt_format
from ivedu.tokenizer import build_tokenizer


def test_the_prompt_format_follows_the_profile_and_the_tokenizer():
    plain = build_tokenizer("a b".split())
    assert prompt_format(settings("ch2", "tiny"), plain) is TINY_FORMAT
    assert prompt_format(settings("ch2", "colab"), plain) is QA_FORMAT
    chat = build_tokenizer("a b".split())
    chat.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</>{% endfor %}<assistant>"
    fmt = prompt_format(settings("ch2", "paper"), chat)
    assert isinstance(fmt, ChatFormat)
    assert (fmt.head, fmt.user_end, fmt.turn_end, fmt.open_turn) == ("<user>", "</><assistant>", "</><user>",
                                                                     "</><assistant>")


def test_the_tiny_profile_loads_the_tiny_model_its_format_and_world():
    s = settings("ch2", "tiny")
    lm = load_study(s)
    world = load_tasks(s, lm)
    assert isinstance(lm, ModelUnderStudy) and lm.fmt is TINY_FORMAT and lm.name == "tiny"
    assert lm.model.config.hidden_size == 128 and lm.layout.n_layers == lm.model.config.num_hidden_layers
    assert len(general_tasks(s, world)) == 10
    other = lm.with_model(None)
    assert other.model is None and other.tokenizer is lm.tokenizer and other.fmt is lm.fmt


def test_known_only_settings_need_the_model():
    with pytest.raises(ValueError, match="pass the model under study"):
        load_tasks(settings("ch2", "smol"))


def test_describe_tasks_gives_each_tasks_split_sizes_and_marks_known_examples():
    from dataclasses import replace

    from ivedu.study import describe_tasks

    s = settings("ch1", "tiny")
    world = load_tasks(s)
    lines = describe_tasks(s, world).splitlines()
    assert len(lines) == len(world.tasks)
    first = world.tasks[0]
    assert lines[0].split()[:2] == [first.name, "new" if first.is_new else "general"]
    assert f"test {len(first.test):>4}" in lines[0] and "known" not in lines[0]
    known = replace(s, data=replace(s.data, known_only=True))
    general = {t.name for t in general_tasks(known, world)}
    assert all(("known examples only" in line) == (line.split()[0] in general)
               for line in describe_tasks(known, world).splitlines())


def test_known_examples_are_computed_once_and_read_back(tmp_path, monkeypatch):
    from dataclasses import replace

    import ivedu.evaluation
    from ivedu.study import known_cache_path

    monkeypatch.setenv("IVEDU_CACHE", str(tmp_path))
    s = settings("ch1", "tiny")
    s = replace(s, data=replace(s.data, known_only=True, general_tasks=("antonym", "plural")))
    lm = load_study(s)
    first = load_tasks(s, lm)
    whole = load_tasks(replace(s, data=replace(s.data, known_only=False))).task("antonym")
    path = known_cache_path(lm, whole)
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))  # written whole, no temporary left
    assert 0 < len(first.task("antonym").test) < len(whole.test)
    new = first.new[0]
    assert new == load_tasks(replace(s, data=replace(s.data, known_only=False))).task(new.name)  # new tasks stay whole

    def refuse(*args, **kwargs):
        raise AssertionError("the known examples were computed again")

    monkeypatch.setattr(ivedu.evaluation, "known_examples", refuse)
    assert load_tasks(s, lm) == first  # read back: the same examples, no generation
    path.write_text("{not json")
    with pytest.raises(AssertionError, match="computed again"):  # a damaged file is recomputed, not trusted
        load_tasks(s, lm)
