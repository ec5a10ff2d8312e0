"""Prompt formats: the tiny format's text, and chat prompts written in a model's own template."""

import pytest

from ivedu.prompts import (ONE_WORD, QA_FORMAT, TINY_FORMAT, ChatFormat, bare_prompt, chat_format, fewshot_prompt,
                           instructed_prompt, shuffled_fewshot_prompt)
from ivedu.tokenizer import build_tokenizer
from ivedu.world import Example, custom_task

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Llama-2's shape: the system message sits inside the first [INST] block, answers follow "[/INST]".
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set sys = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}"
          "{% set messages = messages[1:] %}{% else %}{% set sys = '' %}{% endif %}"
          "{% for m in messages %}{% if m['role'] == 'user' %}<s>[INST] {% if loop.first %}{{ sys }}{% endif %}"
          "{{ m['content'] }} [/INST]{% else %} {{ m['content'] }} </s>{% endif %}{% endfor %}")


def tokenizer_with(template):
    tokenizer = build_tokenizer("a b".split())
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="module")
def task():
    return custom_task("plural", ["cat", "dog", "cup"], ["cats", "dogs", "cups"],
                       ("Give the plural of the noun.", "Make the word plural."))


def test_the_tiny_format_is_unchanged(task):
    assert instructed_prompt(task, "cat", 0, TINY_FORMAT) == "input : cat . Give the plural of the noun. . output :"
    assert bare_prompt("cat", TINY_FORMAT) == "input : cat output :"
    assert fewshot_prompt([Example("dog", "dogs")], "cat", TINY_FORMAT) == "input : dog output : dogs ; input : cat output :"
    assert bare_prompt("cat", QA_FORMAT) == "Q: cat A:"


def test_a_chat_prompt_puts_the_instruction_first_and_leaves_the_assistant_turn_open(task):
    fmt = chat_format(tokenizer_with(CHATML))
    assert isinstance(fmt, ChatFormat) and fmt.constraint == ONE_WORD
    assert instructed_prompt(task, "cat", 1, fmt) == (
        f"<|im_start|>user\nMake the word plural. {ONE_WORD}\ncat<|im_end|>\n<|im_start|>assistant\n")
    assert bare_prompt("cat", fmt) == "<|im_start|>user\ncat<|im_end|>\n<|im_start|>assistant\n"


def test_demonstrations_are_turns_of_the_conversation(task):
    fmt = chat_format(tokenizer_with(CHATML))
    prompt = fewshot_prompt([Example("dog", "dogs")], "cat", fmt)
    assert prompt == ("<|im_start|>user\ndog<|im_end|>\n<|im_start|>assistant\ndogs<|im_end|>\n"
                      "<|im_start|>user\ncat<|im_end|>\n<|im_start|>assistant\n")
    import random
    shuffled = shuffled_fewshot_prompt([Example("dog", "dogs"), Example("cup", "cups")], "cat", random.Random(1), fmt)
    assert shuffled.count("<|im_start|>user") == 3 and shuffled.endswith("assistant\n")


def test_a_template_that_puts_the_system_message_in_the_first_turn(task):
    fmt = chat_format(tokenizer_with(LLAMA2), system="Be brief.")
    assert bare_prompt("cat", fmt) == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\ncat [/INST]"
    assert fewshot_prompt([Example("dog", "dogs")], "cat", fmt) == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\ndog [/INST] dogs </s><s>[INST] cat [/INST]")


def test_an_answer_ends_at_the_formats_stop_strings():
    # A plain format's answer ends where the next demonstration would start; a chat model's where
    # its template closes the assistant's turn, whatever the plain format's separator.
    assert TINY_FORMAT.stop == (";",)
    assert QA_FORMAT.stop == ("\n",)
    assert chat_format(tokenizer_with(CHATML)).stop == ("<|im_end|>",)
    assert chat_format(tokenizer_with(LLAMA2), system="Be brief.").stop == ("</s>",)
    assert chat_format(tokenizer_with("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")).stop == ()


def test_templates_chat_format_cannot_reproduce_are_refused():
    drops_messages = "{% for m in messages[-1:] %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="exactly once.*QA_FORMAT"):
        chat_format(tokenizer_with(drops_messages))
    counts_turns = "{% for m in messages %}{{ loop.length }}:{{ m['content'] }};{% endfor %}"
    with pytest.raises(ValueError, match="differently.*QA_FORMAT"):
        chat_format(tokenizer_with(counts_turns))


def test_without_a_template_the_plain_format_is_used():
    assert chat_format(build_tokenizer("a b".split())) is QA_FORMAT
    assert chat_format(build_tokenizer("a b".split()), TINY_FORMAT) is TINY_FORMAT


def test_the_real_smollm2_template(smol, task):
    _, tokenizer = smol
    fmt = chat_format(tokenizer)
    prompt = instructed_prompt(task, "cat", 0, fmt)
    assert prompt == tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Give the plural of the noun. {ONE_WORD}\ncat"}], tokenize=False,
        add_generation_prompt=True)
    assert tokenizer.encode(prompt).count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant
    assert fmt.stop == ("<|im_end|>",) and tokenizer.eos_token == "<|im_end|>"
