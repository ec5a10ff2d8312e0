"""Training sequences are the joint encoding of prompt and answer, with EOS as an id after the answer."""

import pytest
from test_generation import byte_level_tokenizer, metaspace_tokenizer, smollm2_chat_prompt, smollm2_tokenizer
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from ivedu.corpus import IGNORE_INDEX, encode_pieces, fewshot_sequence, instructed_sequence, statement_sequence
from ivedu.prompts import chat_format, instructed_prompt, join_answer
from ivedu.tokenizer import world_tokenizer
from ivedu.world import Example, custom_task
from ivedu.prompts import TINY_FORMAT

FMT = TINY_FORMAT  # the tiny model's prompt format


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_tokenizer()


# --- the tiny model's word-level tokenizer: one id per word, <bos> in front, <eos> after the answer ---

def test_tiny_sequences_are_one_id_per_word(world):
    tok = world_tokenizer(world)
    vocab = tok.get_vocab()
    bos, eos = tok.bos_token_id, tok.eos_token_id

    def words(text):
        return [vocab[w] for w in text.split()]

    capital = world.task("capital")
    ex = capital.train[0]
    seq = instructed_sequence(tok, capital, ex, 1, fmt=FMT)
    prompt = f"input : {ex.input} . {capital.instructions[1]} . output :"
    assert seq.input_ids == [bos, *words(prompt), *words(ex.output), eos]
    assert seq.labels == [IGNORE_INDEX] * (1 + len(prompt.split())) + [*words(ex.output), eos]

    seq = statement_sequence(tok, capital, ex, 0)
    prompt = capital.statement_prefix(ex.input, 0)
    assert seq.input_ids == [bos, *words(prompt), *words(ex.output), eos]
    assert seq.labels == [IGNORE_INDEX] * (1 + len(prompt.split())) + [*words(ex.output), eos]

    d1, d2, q = capital.train[1:4]
    seq = fewshot_sequence(tok, [d1, d2], q, fmt=FMT)
    unlearnt = [bos, *words(f"input : {d1.input} output : {d1.output} ;"), *words(f"input : {d2.input} output :")]
    second = words(f"{d2.output} ;")
    query = words(f"input : {q.input} output :")
    assert seq.input_ids == [*unlearnt, *second, *query, *words(q.output), eos]
    assert seq.labels == ([IGNORE_INDEX] * len(unlearnt) + second + [IGNORE_INDEX] * len(query)
                          + [*words(q.output), eos])


def test_tiny_sequences_pin_their_ids(world):
    tok = world_tokenizer(world)
    ids = tok.convert_tokens_to_ids
    task = custom_task("mine", ["peru", "cuba", "chad", "fiji", "mali"], ["lima", "havana", "ndjamena", "suva", "bamako"],
                       ["what is its capital"], statements=("the capital of {x} is {y}",))
    seq = instructed_sequence(tok, task, Example("peru", "lima"), 0, fmt=FMT)
    assert seq.input_ids == ids("<bos> input : peru . what is its capital . output : lima <eos>".split())
    assert seq.labels == [IGNORE_INDEX] * 12 + ids(["lima", "<eos>"])
    seq = statement_sequence(tok, task, Example("cuba", "havana"))
    assert seq.input_ids == ids("<bos> the capital of cuba is havana <eos>".split())
    assert seq.labels == [IGNORE_INDEX] * 6 + ids(["havana", "<eos>"])


# --- real tokenizers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [byte_level_tokenizer, metaspace_tokenizer])
@pytest.mark.parametrize("prompt", ["Q: What is the capital of France?\nA:", "Q: What is the capital of France?\n"])
def test_a_sequence_is_the_joint_encoding_plus_eos(make, prompt):
    tok = make()
    joint = prompt + ("Paris" if prompt.endswith("\n") else " Paris")
    seq = encode_pieces(tok, [(prompt, False), ("Paris", True, True)])
    assert seq.input_ids == tok.encode(joint) + [tok.eos_token_id]  # BOS only where the tokenizer adds one
    n_prompt = len(tok.encode(prompt))
    assert seq.labels == [IGNORE_INDEX] * n_prompt + seq.input_ids[n_prompt:]
    assert tok.decode(seq.input_ids[n_prompt:-1]).strip() == "Paris"


def test_a_piece_that_merges_with_the_text_before_it_is_refused():
    tok = byte_level_tokenizer()  # "A: " ends in a lone "Ġ" that "A: Paris" merges into "ĠParis"
    with pytest.raises(ValueError, match=r"merges the end of the prompt .*A: ' with the answer 'Paris'.*separator"):
        encode_pieces(tok, [("Q: capital of France?\nA: ", False), ("Paris", True, True)])
    # A tokenizer whose merges cross the space itself: ": P" is one token.
    vocab = {c: i for i, c in enumerate(["<s>", "</s>", "A", ":", " ", "P", ": ", ": P"])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[(":", " "), (": ", "P")]))
    merging = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>")
    with pytest.raises(ValueError, match=r"merges the end of the prompt .*'A:' with the answer 'P'"):
        encode_pieces(merging, [("A:", False), ("P", True, True)])


def test_a_smollm2_training_sequence_has_the_templates_special_tokens_once(smollm2):
    prompt = smollm2_chat_prompt(smollm2)
    seq = encode_pieces(smollm2, [(prompt, False), ("Paris", True, True)])
    tokens = smollm2.convert_ids_to_tokens(seq.input_ids)
    assert tokens[0] == "<|im_start|>" and tokens[1] != "<|im_start|>"  # the template's, not a second BOS
    assert tokens.count("<|im_start|>") == prompt.count("<|im_start|>")
    assert tokens[-3:] == ["Ċ", "Paris", "<|im_end|>"]  # no stray space token before EOS
    assert [t for t, label in zip(tokens, seq.labels) if label != IGNORE_INDEX] == ["Paris", "<|im_end|>"]


def test_a_smollm2_instructed_sequence_in_its_chat_format(smollm2):
    task = custom_task("capital", ["France", "Peru", "Chile", "Cuba", "Mali"], ["Paris", "Lima", "Santiago", "Havana",
                       "Bamako"], ["What is its capital?"])
    fmt = chat_format(smollm2)
    seq = instructed_sequence(smollm2, task, Example("France", "Paris"), 0, fmt=fmt)
    prompt = instructed_prompt(task, "France", 0, fmt)
    assert seq.input_ids == smollm2.encode(join_answer(prompt, "Paris")) + [smollm2.eos_token_id]
    tokens = smollm2.convert_ids_to_tokens(seq.input_ids)
    assert tokens[0] == "<|im_start|>" and tokens[1] != "<|im_start|>"
    # Right after the assistant header the answer has no space; after an "A:" prefix it has one.
    assert tokens[-2:] == ["Paris" if prompt.endswith("\n") else "ĠParis", "<|im_end|>"]
