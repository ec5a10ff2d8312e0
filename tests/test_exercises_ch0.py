"""Chapter 0's checker passes on the reference solution and fails on planted wrong answers, on the
tiny model's tokenizer and two trained ones and, with the chapter's tokenizer and format, on the
real-model profile (smol)."""

import pytest

from exercise_solutions import smol_world, solution, stub
from ivedu.exercises import ExerciseError
from ivedu.exercises.ch0 import byte_level_tokenizer, check_answer_tokens
from ivedu.prompts import answer_ids
from ivedu.study import ModelUnderStudy


def answer_encoded_alone(tokenizer, prompt, answer):
    """Wrong: encodes " " + answer on its own -- right for the tiny model's word-level tokenizer only."""
    return tokenizer.encode(" " + answer, add_special_tokens=False)


def test_answer_tokens_checker_passes_on_the_reference(capsys):
    check_answer_tokens(answer_ids)
    assert "correct" in capsys.readouterr().out


def test_encoding_the_answer_alone_is_caught_where_the_tokenizer_is_not_word_level():
    with pytest.raises(ExerciseError, match="(?s)byte-level BPE.*newline.*Hint: join the texts"):
        check_answer_tokens(answer_encoded_alone)


def test_a_space_after_every_prompt_is_caught_after_a_chat_header():
    def always_a_space(tokenizer, prompt, answer):  # planted: joins with a space even after a newline
        return tokenizer.encode(prompt + " " + answer)[len(tokenizer.encode(prompt)):]

    with pytest.raises(ExerciseError, match="newline"):
        check_answer_tokens(always_a_space)


def test_the_bos_of_a_separate_encoding_is_caught_on_the_tiny_tokenizer():
    def with_bos(tokenizer, prompt, answer):  # planted: encode() adds the tiny tokenizer's <bos> to the answer
        return tokenizer.encode(" " + answer)

    with pytest.raises(ExerciseError, match="tiny model's tokenizer, after an instructed prompt"):
        check_answer_tokens(with_bos)


def test_a_merged_prompt_must_be_refused():
    def unchecked(tokenizer, prompt, answer):  # planted: cuts the prompt's length off without comparing
        before = tokenizer.encode(prompt)
        joint = tokenizer.encode(prompt + answer if not prompt or prompt[-1].isspace() else f"{prompt} {answer}")
        return joint[len(before):]

    with pytest.raises(ExerciseError, match="(?s)ending in a space|raise ValueError"):
        check_answer_tokens(unchecked)
    assert byte_level_tokenizer() is byte_level_tokenizer(), "the tokenizers are trained once per process"


def test_a_stub_gets_a_clear_message():
    def stub(tokenizer, prompt, answer):
        raise NotImplementedError("your code here")

    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_answer_tokens(stub)


# ---------------------------------------------------------------- on the real-model profile (smol)

@pytest.fixture(scope="module")
def smol_case(smol):
    """Exercise 0.1's check cell on the smol profile: SmolLM2's tokenizer, its chat format and the
    profile's general tasks, as chapter 0 passes them."""
    _, model, tokenizer, fmt, world = smol_world(smol, "ch0")
    return {"lm": ModelUnderStudy(model, tokenizer, fmt, "smol"), "tasks": world.general}


def test_answer_tokens_check_on_the_real_tokenizer(smol_case, capsys):
    check_answer_tokens(solution("00_tiny_world", "answer_token_ids"), **smol_case)
    assert "the chapter's" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_answer_tokens(stub, **smol_case)
    # right on the tiny tokenizer; SmolLM2 writes the answer after the chat header as 'Paris', not 'ĠParis'
    with pytest.raises(ExerciseError, match="chapter's tokenizer, after the .* instructed prompt"):
        check_answer_tokens(answer_encoded_alone, **smol_case)
