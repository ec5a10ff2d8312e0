"""The scores on models whose answers are known: a bigram model with hand-set logits, and the
shipped tiny model on its own world."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import ivedu
from ivedu import generation
from ivedu.evaluation import (AbilityScores, _decoded_answers, _generation_score, _generation_score_by_decoding,
                              demonstrations, exact_match, format_abilities, greedy_answers, in_context_score,
                              instructed_prompts, instruction_following_score, knowledge_score, mean_abilities,
                              score_abilities)
from ivedu.generation import answer_logprobs, decided_margin, encode_batch, forced_greedy, prompt_ids
from ivedu.prompts import answer_ids, chat_format, fewshot_prompt
from ivedu.study import ModelUnderStudy
from ivedu.tokenizer import build_tokenizer
from ivedu.world import Example, Task
from ivedu.prompts import TINY_FORMAT

FMT = TINY_FORMAT  # the tiny model's prompt format

WORDS = "a b c d e is of the x do it input output : . ;".split()


class Bigram(nn.Module):
    """A causal LM whose next-token logits depend only on the current token: ``table[token]``."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(vocab_size, vocab_size))

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        return SimpleNamespace(logits=self.table[input_ids])


@pytest.fixture(scope="module")
def known():
    """After ":" the model says "b" (then stops); after "is" it prefers "b" to "c" by 2 nats."""
    tok = build_tokenizer(WORDS)
    model = Bigram(len(tok))
    ids = tok.convert_tokens_to_ids
    with torch.no_grad():
        model.table[ids(":"), ids("b")] = 5.0
        model.table[ids("b"), tok.eos_token_id] = 10.0
        model.table[ids("c"), tok.eos_token_id] = 10.0
        model.table[ids("is"), ids("b")] = 3.0
        model.table[ids("is"), ids("c")] = 1.0
    task = Task("toy", "fact", ("do it",), ("the x of {x} is {y}",),
                train=(Example("d", "b", ("c",)), Example("e", "b", ("c",)), Example("c", "b", ("c",))),
                valid=(), test=(Example("a", "b", ("c",)), Example("d", "c", ("b",))))
    return model, tok, task


def softmax_at(model, row: str, col: str, tok) -> float:
    ids = tok.convert_tokens_to_ids
    return torch.softmax(model.table[ids(row)], -1)[ids(col)].item()


def test_instruction_following_score_on_known_answers(known):
    model, tok, task = known
    score = instruction_following_score(ModelUnderStudy(model, tok, FMT), task, "test")
    assert score.n == 2
    assert score.exact_match == 0.5  # "b" is right for "a", wrong for "d"
    assert score.first_token_accuracy == 0.5
    expected = (softmax_at(model, ":", "b", tok) + softmax_at(model, ":", "c", tok)) / 2
    assert score.answer_prob == pytest.approx(expected, rel=1e-5)


def test_knowledge_score_on_known_answers(known):
    model, tok, task = known
    score = knowledge_score(ModelUnderStudy(model, tok, FMT), task, "test")
    assert score.ranking_accuracy == 0.5  # "is" -> b beats c: right for "a", wrong for "d"
    p_b, p_c = softmax_at(model, "is", "b", tok), softmax_at(model, "is", "c", tok)
    assert p_b / p_c == pytest.approx(math.exp(2), rel=1e-5)
    assert score.gold_prob == pytest.approx((p_b + p_c) / 2, rel=1e-5)


def test_in_context_score_on_known_answers(known):
    model, tok, task = known
    score = in_context_score(ModelUnderStudy(model, tok, FMT), task, "test", k=2)
    assert score.n == 2 and score.exact_match == 0.5


def test_demonstrations_are_deterministic_from_train_and_never_the_query(known):
    _, _, task = known
    query = Example("c", "b")
    demos = demonstrations(task, query, k=2, seed=0)
    assert demos == demonstrations(task, query, k=2, seed=0)
    assert len(demos) == 2 and set(demos) <= set(task.train) and query.input not in {d.input for d in demos}
    assert fewshot_prompt(demos, "c", TINY_FORMAT).endswith("input : c output :")


def test_score_abilities_without_demonstrations_leaves_in_context_empty(known):
    model, tok, task = known
    (row,) = score_abilities(ModelUnderStudy(model, tok, FMT), [task], "test", k=0)
    assert row.task == "toy" and row.if_exact_match == 0.5 and row.kn_ranking == 0.5
    assert math.isnan(row.icl_exact_match) and math.isnan(row.icl_answer_prob)


def test_format_abilities_shows_before_and_after_and_refuses_rows_of_different_tasks():
    a = AbilityScores("capital", 1, 1, 1, 1, 1, 1)
    b = AbilityScores("plural", 0, 0, 0, 0, 0, 0)
    assert "1.00 -> 0.00" in format_abilities([a], [AbilityScores("capital", 0, 0, 0, 0, 0, 0)])
    with pytest.raises(ValueError, match="do not match"):
        format_abilities([a], [b])


def test_the_shipped_model_follows_and_knows_its_world():
    model, tok = ivedu.load_model("tiny")
    world = ivedu.build_world(0)
    tasks = [world.task("continent"), world.task("last")]
    rows = score_abilities(ModelUnderStudy(model, tok, FMT), tasks, "test", k=4)
    means = mean_abilities(rows)
    assert means["if_exact_match"] >= 0.9 and means["kn_ranking"] >= 0.95
    assert all(0 <= v <= 1 for v in means.values())
    # The new task it was never taught: the answer is known to be out of reach.
    assert instruction_following_score(ModelUnderStudy(model, tok, FMT), world.task("first_french"),
                                       "test").exact_match < 0.2


def test_scores_build_their_prompts_in_the_given_format(tiny, world, monkeypatch):
    import ivedu.evaluation as evaluation
    from ivedu.prompts import PromptFormat

    seen = []

    def capture(lm, name, prompts, golds):
        seen.extend(prompts)
        return evaluation.InstructionScore(name, len(prompts), 0.0, 0.0, 0.0)

    monkeypatch.setattr(evaluation, "_generation_score", capture)
    qa = PromptFormat(input_prefix="Q:", output_prefix="A:", separator="\n", instruction_end="\n")
    model, tokenizer = tiny
    task = world.task("capital")
    evaluation.instruction_following_score(ModelUnderStudy(model, tokenizer, qa), task, "valid")
    evaluation.in_context_score(ModelUnderStudy(model, tokenizer, qa), task, "valid", k=2)
    assert seen and all(p.startswith("Q:") and p.endswith("A:") for p in seen)
    assert not any("input :" in p for p in seen)


def test_known_examples_keep_exactly_what_the_model_answers_right_under_its_instruction(tiny, world):
    from ivedu.evaluation import exact_match, greedy_answers, known_examples, split_sizes
    from ivedu.prompts import instructed_prompt

    model, tokenizer = tiny
    task = world.task("antonym")
    known = known_examples(ModelUnderStudy(model, tokenizer, FMT), task)
    for split in ("train", "valid", "test"):
        examples = task.split(split)
        golds = [ex.output for ex in examples]
        prompts = [instructed_prompt(task, ex.input, 0, TINY_FORMAT) for ex in examples]
        answers = greedy_answers(ModelUnderStudy(model, tokenizer, FMT), prompts, golds)
        right = exact_match(answers, golds)
        assert known.split(split) == tuple(ex for ex, ok in zip(examples, right) if ok)
    assert 0 < split_sizes(known)["test"] <= split_sizes(task)["test"]


def test_known_examples_refuse_an_echo_that_starts_like_the_answer(known):
    from dataclasses import replace

    from ivedu.evaluation import known_examples

    model, tok, task = known  # the model answers "b" to every instructed prompt
    echo = replace(task, train=(), valid=(), test=(Example("a", "b", ("c",)), Example("b", "b d", ("c",))))
    # "b d" starts with the model's answer "b" (the first-token rule would keep it); the whole answer is wrong
    assert known_examples(ModelUnderStudy(model, tok, FMT), echo).test == (echo.test[0],)


def test_exact_match_ignores_spacing_and_a_final_full_stop_but_not_case():
    from ivedu.evaluation import exact_match, normalise_answer

    assert normalise_answer("  Laugh. ") == "Laugh" and normalise_answer("Washington, D.C.") == "Washington, D.C"
    assert exact_match(["Laugh.", "laugh", "Oui !", "b  d", "b."], ["Laugh", "Laugh", "Oui", "b d", "b d"]) == \
        [True, False, True, True, False]


def test_a_task_the_model_cannot_do_at_all_is_refused_by_name(tiny, world):
    from dataclasses import replace

    from ivedu.evaluation import known_examples

    model, tokenizer = tiny
    task = world.task("capital")
    wrong = replace(task, train=(), valid=(), test=tuple(Example(ex.input, "banana") for ex in task.test[:3]))
    with pytest.raises(ValueError, match="none of task 'capital'"):
        known_examples(ModelUnderStudy(model, tokenizer, FMT), wrong)


def test_survey_task_reports_what_the_first_token_rule_credits_alone(known):
    from dataclasses import replace

    from ivedu.evaluation import survey_task

    model, tok, task = known  # the model answers "b" to every instructed prompt
    echo = replace(task, test=task.test + (Example("b", "b d", ("c",)),))  # the answer starts like its input
    survey = survey_task(ModelUnderStudy(model, tok, FMT), echo, "test")
    assert (survey.n, survey.first_token, survey.exact_match) == (3, 2 / 3, 1 / 3)
    assert survey.copies == 1 / 3, "'b' repeats the third input"
    assert survey.first_token_only == 1 / 3, "the third answer's first token is right, the answer is not"
    assert survey_task(ModelUnderStudy(model, tok, FMT), echo, "test", n=1).n == 1
    with pytest.raises(ValueError, match="no examples in split 'valid'"):
        survey_task(ModelUnderStudy(model, tok, FMT), echo, "valid")


def test_exact_match_score_is_the_instruction_scores_exact_match(known):
    from ivedu.evaluation import exact_match_score

    model, tok, task = known
    assert exact_match_score(ModelUnderStudy(model, tok, FMT), task, "test") == 0.5
    assert exact_match_score(ModelUnderStudy(model, tok, FMT), task, "test") == \
        instruction_following_score(ModelUnderStudy(model, tok, FMT), task, "test").exact_match


# --- greedy exact match from one teacher-forced pass ---------------------------------------------
# ``_generation_score`` and ``greedy_answers`` read greedy answers from a teacher-forced pass over
# prompt + gold where it proves them, and decode the rest; the old way decodes every prompt and
# scores the first token and the probability in passes of their own. Every case below must give the
# same predictions and scores both ways: greedy right, wrong, right then an extra token, stopping
# early, a near tie, and the gold's text written through other tokens.



def both_ways(lm, prompts, golds):
    """The new and the old computation of the scores and greedy answers, asserted equal; the new ones."""
    new, old = _generation_score(lm, "t", prompts, golds), _generation_score_by_decoding(lm, "t", prompts, golds)
    assert new == old
    answers = greedy_answers(lm, prompts, golds)
    assert answers == _decoded_answers(lm, prompts, golds)
    return new, answers


def forced(lm, prompts, golds, **kwargs):
    max_new = max(len(answer_ids(lm.tokenizer, p, g)) for p, g in zip(prompts, golds)) + 1
    return forced_greedy(lm.model, lm.tokenizer, prompts, golds, max_new, stop=lm.fmt.stop, **kwargs)


@pytest.fixture(scope="module")
def chained():
    """A bigram model (no key-value cache) whose greedy answers are known, prompt by its last token:
    after ":" it says "b ." then EOS; after "it" the one token "b c" (a space inside: encoding never
    makes it) then EOS; after "do" "b" and "c" tie exactly."""
    tok = build_tokenizer(WORDS + ["!", "b c"])
    model = Bigram(len(tok)).eval()
    ids = tok.convert_tokens_to_ids
    with torch.no_grad():
        for row, col, logit in ((":", "b", 5.0), ("b", ".", 4.0), (".", "<eos>", 6.0), ("it", "b c", 5.0),
                                ("b c", "<eos>", 6.0), ("do", "b", 5.0), ("do", "c", 5.0), ("c", "<eos>", 6.0)):
            model.table[ids(row), ids(col)] = logit
    return ModelUnderStudy(model, tok, FMT)


CHAINED_CASES = [  # prompt, gold, the greedy answer, whether the pass decides it
    ("input : a output :", "b .", "b .", True),     # right, ended by EOS
    ("input : a output :", "b", "b .", True),       # right, then an extra token that normalises away
    ("input : d output :", "c", "b .", False),      # wrong
    ("input : d output :", "b . c", "b .", False),  # stops before the gold ends
    ("input : e output :", "b !", "b .", False),    # the same answer once normalised, through other tokens
    ("the x of it", "b c", "b c", False),           # the gold's text, through another token
    ("input : e . do", "c", "b .", False),          # an exact tie: only decoding says which
]


def test_the_one_pass_gives_the_decoded_answers_and_scores_on_known_cases(chained):
    prompts, golds, expected, decided = (list(x) for x in zip(*CHAINED_CASES))
    score, answers = both_ways(chained, prompts, golds)
    assert answers == expected
    assert score.exact_match == 4 / 7  # "b ." for "b .", "b" and "b !"; "b c" for "b c"
    assert [a is not None for a in forced(chained, prompts, golds).answers] == decided
    assert forced(chained, prompts, golds).first[-1] is None  # the tie is left to the prompt's own pass


def test_a_model_with_hooks_or_in_training_is_decoded_throughout(chained, monkeypatch):
    prompts, golds = [c[0] for c in CHAINED_CASES], [c[1] for c in CHAINED_CASES]
    expected = _generation_score_by_decoding(chained, "t", prompts, golds)

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher-forced pass ran")

    monkeypatch.setattr("ivedu.evaluation.forced_greedy", refuse)
    handle = chained.model.register_forward_hook(lambda module, args, out: out)
    try:
        assert _generation_score(chained, "t", prompts, golds) == expected
    finally:
        handle.remove()
    chained.model.train()
    try:
        assert _generation_score(chained, "t", prompts, golds) == expected
    finally:
        chained.model.eval()


def test_the_one_pass_equals_decoding_on_the_tiny_models_tasks(tiny, world):
    model, tokenizer = tiny
    lm = ModelUnderStudy(model, tokenizer, FMT)
    decided = total = 0
    for name in ("capital", "antonym", "reverse"):
        task = world.task(name)
        zero = instructed_prompts(task, "heldout", fmt=FMT)
        examples = task.split("heldout")
        icl = ([fewshot_prompt(demonstrations(task, ex, 4), ex.input, FMT) for ex in examples],
               [ex.output for ex in examples])
        for prompts, golds in (zero, icl):
            both_ways(lm, prompts, golds)
            answers = forced(lm, prompts, golds).answers
            decided, total = decided + sum(a is not None for a in answers), total + len(answers)
    assert decided > total / 2  # the pass, not decoding, answers most prompts


@pytest.fixture(scope="module")
def random_chat():
    """A random 2-layer Llama with a ChatML template over a byte-level BPE (the answers end at the
    special token ``<|im_end|>``, made likely by a long output row), its prompts, and golds cut from
    its own greedy answers at 1 to 4 tokens, plus a wrong one: right, right then more, stopping
    early, and texts with a broken UTF-8 byte, which re-encode as other tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ivedu.exercises.ch0 import SENTENCES, byte_level_tokenizer
    tok = byte_level_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(config).eval()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        model.lm_head.weight[end] *= 2.5
        for i in range(len(tok)):  # no broken bytes or control characters: answers a reader can print
            if not tok.decode([i]).isprintable() or "\ufffd" in tok.decode([i]):
                model.lm_head.weight[i] = 0.0
    lm = ModelUnderStudy(model, tok, chat_format(tok))
    assert lm.fmt.stop == ("<|im_end|>",)
    words = sorted(set(" ".join(SENTENCES).replace("?", " ").replace(".", " ").split()))
    prompts = [lm.fmt.instructed("Say one word.", w) for w in words][:48]
    golds = [generation.greedy_generate(model, tok, [p], max_new_tokens=1 + i % 4, stop=lm.fmt.stop)[0] or "x"
             for i, p in enumerate(prompts)]
    golds[::7] = ["Paris"] * len(golds[::7])
    return lm, prompts, golds


def test_the_one_pass_equals_decoding_on_a_random_chat_model(random_chat):
    lm, prompts, golds = random_chat
    score, answers = both_ways(lm, prompts, golds)
    decided = forced(lm, prompts, golds).answers
    right = exact_match(answers, golds)
    kinds = {(d is not None, r) for d, r in zip(decided, right)}
    assert kinds == {(True, True), (True, False), (False, True), (False, False)}, kinds
    assert 0 < score.exact_match < 1


def test_the_one_pass_gives_answer_logprobs_bit_for_bit(tiny, random_chat):
    lm, prompts, golds = random_chat
    assert torch.equal(forced(lm, prompts, golds, logprobs=True).logprobs,
                       answer_logprobs(lm.model, lm.tokenizer, prompts, golds))
    model, tokenizer = tiny
    task = ivedu.build_world(0).task("capital")
    prompts, golds = instructed_prompts(task, "heldout", fmt=FMT)
    lm = ModelUnderStudy(model, tokenizer, FMT)
    assert torch.equal(forced(lm, prompts, golds, logprobs=True).logprobs,
                       answer_logprobs(model, tokenizer, prompts, golds))


def stepped_logits(model, tokenizer, prompts, answers) -> torch.Tensor:
    """The logits greedy decoding computes along ``answers`` (``k`` tokens each): the prompts' pass,
    then one cached step per answer token, as :func:`ivedu.generation.greedy_generate` takes them:
    [batch, k + 1, vocab]."""
    batch = encode_batch(tokenizer, prompt_ids(tokenizer, prompts))
    out = model(**batch, use_cache=True)
    cache, logits = generation.returned_cache(out), [out.logits[:, -1]]
    for j in range(len(answers[0])):
        batch = generation._append(batch, torch.tensor([a[j] for a in answers]))
        out = model(input_ids=batch["input_ids"][:, -1:], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"][:, -1:], use_cache=True,
                    **generation.cache_kwargs(model, cache))
        cache = generation.returned_cache(out)
        logits.append(out.logits[:, -1])
    return torch.stack(logits, 1)


@torch.no_grad()
def test_the_teacher_forced_and_the_stepped_logits_differ_far_below_the_margin(tiny, random_chat):
    """What makes the pass exact: its argmax is greedy decoding's wherever the best logit leads by
    more than the margin, because the two computations of a logit differ by far less than half of it."""
    model, tokenizer = tiny
    task = ivedu.build_world(0).task("reverse")
    tiny_prompts, tiny_golds = instructed_prompts(task, "heldout", fmt=FMT)
    chat_lm, chat_prompts, chat_golds = random_chat
    for model, tokenizer, prompts, golds in ((model, tokenizer, tiny_prompts, tiny_golds),
                                             (chat_lm.model, chat_lm.tokenizer, chat_prompts, chat_golds)):
        answers = [answer_ids(tokenizer, p, g) for p, g in zip(prompts, golds)]
        k = min(len(a) for a in answers)
        answers = [a[:k] for a in answers]
        batch = encode_batch(tokenizer, [p + a for p, a in zip(prompt_ids(tokenizer, prompts), answers)])
        forced_logits = model(**batch).logits[:, -k - 1:]
        gap = (forced_logits - stepped_logits(model, tokenizer, prompts, answers)).abs().max().item()
        assert gap < decided_margin(torch.float32) / 100, gap
