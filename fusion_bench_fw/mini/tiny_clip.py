"""A tiny Hugging Face CLIP that loads fully offline.

Why char-level: CLIP's BPE tokenizer needs a vocabulary and merges file from the hub. With a vocab
of the 256 byte-unicode symbols, their end-of-word forms and the two special tokens, and a merges
file that holds only its header, `CLIPTokenizer` (and the fast tokenizer converted from it) spells
every word letter by letter, and `CLIPProcessor.from_pretrained(dir)` works with no network.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.models.clip.tokenization_clip import bytes_to_unicode

from .tasks import SIZE
from .variants import Variant

MAX_TEXT_LEN = 64  # characters + 2 specials; the longest prompt is about 40


def write_processor(directory: Path) -> CLIPProcessor:
    """Create the char-level tokenizer + 32x32 image processor and save them to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
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
    )
    return CLIPModel(config)
