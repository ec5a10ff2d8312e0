"""Bad input gets an error that says what is wrong and how to fix it (the README's table, row by row)."""

import warnings

import pytest
import torch
from transformers import GPT2Config

from ivedu import toy
from ivedu.checks import (AmbiguousFirstTokenWarning, check_context_length, check_finite_loss, context_length,
                          warn_if_ambiguous_first_token)
from ivedu.extraction import corrupted_prompts
from ivedu.generation import answer_logprobs, greedy_generate, last_token_logits
from ivedu.intervention import steered_first_token_accuracy
from ivedu.mediation import first_answer_tokens, mean_head_activations
from ivedu.models import prepare_tokenizer
from ivedu.tokenizer import build_tokenizer
from ivedu.toy import TinyConfig, train_tiny_model
from ivedu.world import Example, Task, check_task_examples, custom_task
from ivedu.prompts import TINY_FORMAT
from ivedu.settings import FinetuneSettings
from ivedu.study import ModelUnderStudy

FMT = TINY_FORMAT  # the tiny model's prompt format

SMALL = TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, steps=6,
                   pretrain_steps=3, batch_size=8, warmup_steps=2)


def prompt_of(n_tokens: int) -> str:
    """A prompt of known words that the tiny tokenizer encodes to ``n_tokens`` tokens (BOS included)."""
    return " ".join(["peru"] * (n_tokens - 6) + ["input", ":", "peru", "output", ":"])


# --- tasks ------------------------------------------------------------------------------------------

def test_an_empty_task_is_refused():
    with pytest.raises(ValueError, match="task has no examples: give at least one input and its output"):
        custom_task("mine", [], [], ["do it"])
    with pytest.raises(ValueError, match="task 'mine' has no examples"):
        Task("mine", "fact", ("do it",), ("{x} is {y}",), (), (), ())
    with pytest.raises(ValueError, match="has no instruction"):
        custom_task("mine", ["a"], ["b"], [])
    with pytest.raises(ValueError, match="output must be a non-empty string"):
        Example("peru", " ")


def test_mismatched_input_and_output_lists_name_both_lengths():
    with pytest.raises(ValueError, match="^3 inputs but 2 outputs: give exactly one output per input$"):
        check_task_examples(["a", "b", "c"], ["x", "y"])
    with pytest.raises(ValueError, match="2 inputs but 1 outputs"):
        custom_task("mine", ["a", "b"], ["x"], ["do it"])
    task = custom_task("mine", ["peru", "cuba", "chad", "fiji", "mali"], ["lima", "havana", "x", "suva", "bamako"],
                       ["name the capital"])
    assert len(task.train + task.valid + task.test) == 5 and task.is_new


def test_unknown_task_and_split_names_list_the_valid_ones(world):
    with pytest.raises(KeyError, match="no task 'capitals' in this world; tasks are: .*'capital'"):
        world.task("capitals")
    with pytest.raises(ValueError, match="unknown split 'dev'; choose one of"):
        world.task("capital").split("dev")


# --- tokenizers ----------------------------------------------------------------------------------------

def test_a_tokenizer_with_neither_pad_nor_eos_token_is_refused():
    """No pad token is handled (EOS is reused: tests/test_models.py); with no EOS either, say what to set."""
    tokenizer = build_tokenizer(["a", "b"])
    tokenizer.pad_token, tokenizer.eos_token = None, None
    with pytest.raises(ValueError, match="neither a pad nor an EOS token; set tokenizer.pad_token"):
        prepare_tokenizer(tokenizer)


# --- prompts longer than the model's context ------------------------------------------------------------

def test_a_prompt_longer_than_the_context_is_refused_before_any_forward_pass(tiny):
    model, tok = tiny
    assert context_length(model) == model.config.max_position_embeddings == 128
    assert len(tok.encode(prompt_of(130))) == 130
    message = r"the prompt is 130 tokens long but the model takes at most 128 positions .*use fewer demonstrations"
    with pytest.raises(ValueError, match=message):
        last_token_logits(model, tok, ["input : peru output :", prompt_of(130)])
    with pytest.raises(ValueError, match=message):
        mean_head_activations(model, tok, [prompt_of(130)])
    with pytest.raises(ValueError, match="prompt plus 6 generated tokens is 131 tokens long"):
        greedy_generate(model, tok, [prompt_of(125)], max_new_tokens=6, stop=FMT.stop)
    with pytest.raises(ValueError, match="prompt with its answer is 129 tokens long"):
        answer_logprobs(model, tok, [prompt_of(128)], ["lima"])
    assert last_token_logits(model, tok, [prompt_of(128)]).shape == (1, len(tok))  # exactly full is fine


def test_the_context_limit_is_read_from_each_config_name():
    assert context_length(GPT2Config(n_positions=64)) == 64
    check_context_length(GPT2Config(n_positions=64), 64)
    with pytest.raises(ValueError, match="65 tokens long but the model takes at most 64"):
        check_context_length(GPT2Config(n_positions=64), 65)
    assert context_length(object()) is None
    check_context_length(object(), 10**6)  # a config naming no limit is not checked


# --- answers whose first token is ambiguous ---------------------------------------------------------------

class SubwordTokenizer:
    """A stand-in for a subword tokenizer: every word is cut into pieces of three letters."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        pieces = [w[i:i + 3] for w in text.split() for i in range(0, len(w), 3)]
        return [self.vocab.setdefault(p, len(self.vocab)) for p in pieces]

    def decode(self, ids) -> str:
        words = {i: p for p, i in self.vocab.items()}
        return " ".join(words[i] for i in ids)


def test_answers_split_to_a_shared_first_token_are_warned():
    tok = SubwordTokenizer()
    with pytest.warns(AmbiguousFirstTokenWarning, match=r"2 start with 'par' \(e.g. 'paris', 'parma'\)"):
        first_answer_tokens(tok, ["A:"] * 3, ["paris", "parma", "lima"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # distinct first pieces, or one answer repeated: no warning
        first_answer_tokens(tok, ["A:"] * 4, ["lima", "havana", "lima", "paris"])


def test_a_shared_whole_word_first_token_is_the_task_not_the_tokenizer(tiny, world):
    model, tok = tiny
    bare = corrupted_prompts(world.task("bracket"), "test", n=4, fmt=FMT)  # every answer starts with "["
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first_answer_tokens(tok, bare.prompts[:2], ["[ cat dog ]", "[ dog cat ]"])
        steered_first_token_accuracy(ModelUnderStudy(model, tok, FMT), bare.prompts, bare.answers, None, None)


def test_one_warning_per_call_names_at_most_five_shared_tokens():
    tok = SubwordTokenizer()
    stems = ("dogma", "eggnog", "boater", "footer", "birdie", "flowers")
    answers = [f"{s[:3]}{end}" for s in stems for end in ("xa", "yb")] + ["dogxa"]
    with pytest.warns(AmbiguousFirstTokenWarning) as record:
        warn_if_ambiguous_first_token(tok, answers, prompts=["A:"] * len(answers))
    assert len(record) == 1
    message = str(record[0].message)
    assert message.count("2 start with") == 5 and "and 1 more shared first tokens" in message
    assert "'dog'" in message and "'flo'" not in message and "exact match" in message


# --- a loss that becomes nan ---------------------------------------------------------------------------

def test_a_nan_loss_stops_training_and_names_the_step(monkeypatch):
    build = toy.build_tiny_model

    def build_breaking_at_step_2(tokenizer, config):
        model = build(tokenizer, config)
        calls = []

        def poison(module, args, output):
            calls.append(1)
            return output * float("nan") if len(calls) == 3 else output

        model.lm_head.register_forward_hook(poison)
        return model

    monkeypatch.setattr(toy, "build_tiny_model", build_breaking_at_step_2)
    with pytest.raises(FloatingPointError, match=r"^the training loss became nan at step 2; lower the learning rate"):
        train_tiny_model(SMALL)


def test_a_nan_loss_stops_fine_tuning_and_names_the_step(tiny, world):
    from ivedu.finetune import finetune
    model, tok = tiny
    calls = []

    def poison(module, args, output):
        calls.append(1)
        return output * float("nan") if len(calls) == 2 else output

    handle = model.lm_head.register_forward_hook(poison)  # the copy that finetune trains inherits it
    try:
        with pytest.raises(FloatingPointError, match="became nan at step 1"):
            finetune(ModelUnderStudy(model, tok, FMT), world.task("first_french"),
                     FinetuneSettings(max_steps=3, batch_size=4, stop_at=None), "full", 0)
    finally:
        handle.remove()


def test_check_finite_loss_accepts_finite_losses_and_names_infinite_ones():
    check_finite_loss(torch.tensor(2.5), 0)
    check_finite_loss(0.0, 1)
    with pytest.raises(FloatingPointError, match="became inf at step 7"):
        check_finite_loss(torch.tensor(float("inf")), 7)
    with pytest.raises(FloatingPointError, match="became nan at step 3"):
        check_finite_loss(float("nan"), 3)
