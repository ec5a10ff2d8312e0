"""Batched prompting must not depend on how prompts are batched or padded."""

import pytest
import torch

from ivedu.generation import answer_logprobs, greedy_generate, last_token_logits
from ivedu.tokenizer import build_tokenizer
from ivedu.toy import TinyConfig, build_tiny_model

WORDS = "a b c d e f g h input output :".split()


@pytest.fixture(scope="module")
def random_tiny():
    tokenizer = build_tokenizer(WORDS)
    model = build_tiny_model(tokenizer, TinyConfig(hidden_size=32, num_layers=2, num_heads=2,
                                                   intermediate_size=64)).eval()
    return model, tokenizer


def test_left_padding_does_not_change_the_last_token_logits(random_tiny):
    model, tokenizer = random_tiny
    prompts = ["input : a output :", "a b c d e f input : b output :"]
    together = last_token_logits(model, tokenizer, prompts)
    alone = torch.cat([last_token_logits(model, tokenizer, [p]) for p in prompts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_answer_logprobs_equal_a_manual_teacher_forced_sum(random_tiny):
    model, tokenizer = random_tiny
    prompt, answer = "input : a output :", "b c"
    ids = tokenizer.encode(prompt + " " + answer, return_tensors="pt")
    logprobs = torch.log_softmax(model(ids).logits[0], -1)
    n = len(answer.split())
    manual = sum(logprobs[ids.shape[1] - n - 1 + j, ids[0, ids.shape[1] - n + j]] for j in range(n))
    batched = answer_logprobs(model, tokenizer, [prompt, "a b input : c output :"], [answer, "d"])
    assert batched[0].item() == pytest.approx(manual.item(), abs=1e-4)


def test_greedy_generation_matches_step_by_step_argmax(random_tiny):
    model, tokenizer = random_tiny
    prompt = "input : a output :"
    ids = tokenizer.encode(prompt, return_tensors="pt")
    expected = []
    for _ in range(3):
        nxt = model(ids).logits[0, -1].argmax()
        expected.append(int(nxt))
        ids = torch.cat([ids, nxt.view(1, 1)], 1)
    text = tokenizer.decode(expected, skip_special_tokens=True)
    if tokenizer.eos_token_id in expected:
        text = tokenizer.decode(expected[: expected.index(tokenizer.eos_token_id)], skip_special_tokens=True)
    got = greedy_generate(model, tokenizer, [prompt, "a b c input : d output :"], max_new_tokens=3, stop=())
    assert got[0] == " ".join(text.split())


def test_mismatched_prompts_and_answers_are_refused(random_tiny):
    model, tokenizer = random_tiny
    with pytest.raises(ValueError, match="one answer per prompt"):
        answer_logprobs(model, tokenizer, ["input : a output :"], ["b", "c"])
