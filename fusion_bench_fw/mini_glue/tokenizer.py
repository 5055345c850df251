"""An offline GPT-2 tokenizer for the mini GLUE pool: byte-level BPE trained on the pool's own texts.

Saved in GPT-2's own files (``vocab.json``, ``merges.txt``, plus ``tokenizer.json``), so FusionBench's
``load_gpt2_tokenizer`` (the slow ``GPT2Tokenizer``) loads it as it loads the hub's ``gpt2``; one
special token, ``<|endoftext|>``, is BOS, EOS and UNK as in GPT-2, and FusionBench's loader makes it the
padding token too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2TokenizerFast

END_OF_TEXT = "<|endoftext|>"


def build_gpt2_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int) -> None:
    """Train on ``texts`` and save to ``out_dir``; ``vocab_size`` counts the 256 byte symbols and the special token."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's pre-tokenization regex
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = GPT2TokenizerFast(tokenizer_object=backend, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
