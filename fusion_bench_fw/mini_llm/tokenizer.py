"""An offline byte-level BPE tokenizer for the mini-llm pool, trained on the pool's own texts.

Byte-level, with all 256 byte symbols in the vocabulary, so any text round-trips (nothing maps to
<unk>) and no hub download is needed; `AutoTokenizer.from_pretrained(out_dir)` loads the saved copy.
The BPE trainer breaks count ties by pair order, so the same texts give the same vocabulary and ids.
No special tokens are added on encoding: the training code decides where <s> and </s> go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
# Every vocabulary holds the specials and the 256 byte symbols; BPE merges fill the rest.
BASE_VOCAB_SIZE = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())


def build_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """Train on `texts`, save to `out_dir` (loadable offline with AutoTokenizer) and return it.

    `vocab_size` counts the base vocabulary, so it must be at least BASE_VOCAB_SIZE (260); the
    default leaves room for 60 merges (task keywords, " =", frequent digit and letter pairs).
    """
    if vocab_size < BASE_VOCAB_SIZE:
        raise ValueError(f"vocab_size={vocab_size} is below the {BASE_VOCAB_SIZE} base tokens (4 specials + 256 bytes)")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        clean_up_tokenization_spaces=False,  # keep decode an exact inverse of encode
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer
