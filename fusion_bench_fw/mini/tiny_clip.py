"""A tiny Hugging Face CLIP that loads fully offline.

The tokenizer is a real `CLIPTokenizer` (byte-level BPE) whose vocabulary and merges we write
ourselves, so `CLIPProcessor.from_pretrained(dir)` needs no network. The base vocabulary is the 256
byte-unicode symbols, their end-of-word forms and the two special tokens (a merges file with only
its header would spell every word letter by letter). On top, BPE merges learnt from the prompt
corpus of all mini tasks make each prompt word one token, as CLIP's real vocabulary does for common
words: a letter-level text tower needs many more pretraining steps to tell "circle" from
"crescent", and its class embeddings stayed nearly collinear (cosine up to 0.99) in a short build,
which made the frozen zero-shot heads too weak to fine-tune against. Unknown words still tokenize,
letter by letter.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.models.clip.tokenization_clip import bytes_to_unicode

from .tasks import SIZE, TASKS, format_template
from .variants import Variant

MAX_TEXT_LEN = 32  # tokens incl. the 2 specials; prompts are at most 10 tokens

_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _base_vocab() -> Dict[str, int]:
    symbols = list(bytes_to_unicode().values())
    return {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}


def _letter_tokenizer(directory: Path) -> CLIPTokenizer:
    vocab = {**_base_vocab()}
    for s in _SPECIALS:
        vocab[s] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))


def _words(tokenizer: CLIPTokenizer, texts: Iterable[str]) -> Counter:
    """Words as CLIP pre-tokenizes them, each a tuple of symbols ending in a `</w>` one."""
    words: Counter = Counter()
    for text in texts:
        word: List[str] = []
        for sym in tokenizer.tokenize(text):
            word.append(sym)
            if sym.endswith("</w>"):
                words[tuple(word)] += 1
                word = []
    return words


def learn_merges(words: Counter) -> List[Tuple[str, str]]:
    """Plain BPE learning: merge the most frequent adjacent pair until every word is one symbol
    (ties broken by the pair itself, so the result is deterministic)."""
    merges = []
    words = dict(words)
    while True:
        pairs: Counter = Counter()
        for w, n in words.items():
            for pair in zip(w, w[1:]):
                pairs[pair] += n
        if not pairs:
            return merges
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged


def prompt_corpus() -> List[str]:
    return [format_template(t)(c) for spec in TASKS.values() for t in spec.templates for c in spec.classnames]


def write_processor(directory: Path) -> CLIPProcessor:
    """Create the tokenizer + 32x32 image processor, save them to `directory`, and reload them."""
    directory.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(_words(_letter_tokenizer(directory), prompt_corpus()))
    vocab = _base_vocab()
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for s in _SPECIALS:
        vocab[s] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=MAX_TEXT_LEN
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(str(directory))
    return CLIPProcessor.from_pretrained(str(directory))


def new_clip(variant: Variant, processor: CLIPProcessor) -> CLIPModel:
    """A randomly initialised CLIPModel of the variant's size (seed torch before calling)."""
    tok = processor.tokenizer
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=variant.text_width,
            intermediate_size=4 * variant.text_width,
            num_hidden_layers=variant.text_layers,
            num_attention_heads=variant.heads,
            max_position_embeddings=MAX_TEXT_LEN,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=variant.vision_width,
            intermediate_size=4 * variant.vision_width,
            num_hidden_layers=variant.vision_layers,
            num_attention_heads=variant.heads,
            image_size=SIZE,
            patch_size=8,
        ),
        projection_dim=variant.projection_dim,
        logit_scale_init_value=variant.logit_scale_init,
    )
    return CLIPModel(config)
