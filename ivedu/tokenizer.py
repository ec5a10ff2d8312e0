"""A word-level tokenizer for the tiny model: one token per word, so prompts read as text.

It is a real :class:`~transformers.PreTrainedTokenizerFast`, so every ``ivedu`` function
that takes a Hugging Face tokenizer takes this one too. Like Llama's tokenizer, it puts
``<bos>`` in front of every text it encodes.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ivedu.prompts import TINY_FORMAT
from ivedu.world import World

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def world_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """The tokenizer of a world: its words plus the tiny prompt format's words, sorted."""
    return build_tokenizer(sorted(set(world.vocabulary()) | TINY_FORMAT.words()))


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A tokenizer whose vocabulary is the special tokens followed by ``words`` in order."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos = vocab["<bos>"]
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )
