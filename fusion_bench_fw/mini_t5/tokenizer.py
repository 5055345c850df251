"""An offline T5-style tokenizer for the mini T5 GLUE pool: BPE over sentencepiece-style pieces.

Like T5's tokenizers: words start with the ``▁`` piece marker (``Metaspace``), ``<pad>`` is id 0 (also
the decoder's start token), ``</s>`` id 1 is appended to every encoded text, ``<unk>`` id 2, and
sentinel tokens ``<extra_id_k>`` mark the spans of span-corruption pretraining. Saved as a
``PreTrainedTokenizerFast`` that ``AutoTokenizer.from_pretrained`` loads offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SENTINELS = tuple(f"<extra_id_{k}>" for k in range(4))


def build_t5_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK, *SENTINELS], show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A $B {EOS}",
                                                           special_tokens=[(EOS, backend.token_to_id(EOS))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                        additional_special_tokens=list(SENTINELS), padding_side="right",
                                        model_input_names=["input_ids", "attention_mask"])  # T5 takes no token_type_ids
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer
