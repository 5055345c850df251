"""FusionBench's ``OpenCLIPVisionModelPool`` with task-vector pickles that load (FusionBench 0.2.33 workaround).

The stock pool's ``load_model`` cannot read a pickled ``ImageEncoder`` and downloads ``openai``
weights for ``{model_name, pickle_path}`` entries (see :mod:`.openclip_checkpoints`). FW-Merging
itself does not need this class - its OpenCLIP family reads checkpoints on its own from the stock
pool too - but FusionBench's baselines (task arithmetic, TIES, averaging) and its OpenCLIP taskpool
load models through the pool, so the plugin's OpenCLIP configs name this subclass. It changes
nothing else; remove it once FusionBench loads these entries itself.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from .openclip_checkpoints import load_image_encoder, pickle_entry  # first: makes FusionBench's module importable on 3.11

from fusion_bench.modelpool import OpenCLIPVisionModelPool  # noqa: E402


class OpenCLIPTaskVectorPool(OpenCLIPVisionModelPool):
    """An ``OpenCLIPVisionModelPool`` whose pickle and state-dict entries load offline."""

    def load_model(self, model_name_or_config, *args, **kwargs):
        encoder = pickled_encoder(self, model_name_or_config)
        return encoder if encoder is not None else super().load_model(model_name_or_config, *args, **kwargs)


def pickled_encoder(modelpool, model_name_or_config):
    """The ``ImageEncoder`` of a pool entry (a model name or an entry, as ``load_model`` takes them)
    that is a pickle or state-dict file, read offline (:mod:`.openclip_checkpoints`), its
    preprocessing remembered on the pool; None for any other entry, which the pool's loader handles."""
    named = isinstance(model_name_or_config, str) and model_name_or_config in modelpool._models
    entry = modelpool._models[model_name_or_config] if named else model_name_or_config
    if isinstance(entry, DictConfig):
        entry = OmegaConf.to_container(entry, resolve=True)
    if pickle_entry(entry) is None:
        return None
    encoder = load_image_encoder(f"model {model_name_or_config!r}" if named else "model", entry)
    remember_processors(modelpool, encoder)
    return encoder


def remember_processors(modelpool, encoder) -> None:
    """Keep the encoder's preprocessing on the pool, where FusionBench's OpenCLIP taskpool looks for
    it (``modelpool.test_processor``), so it never reloads the pretrained model through the stock loader."""
    if getattr(modelpool, "_train_processor", None) is None and hasattr(encoder, "train_preprocess"):
        modelpool._train_processor = encoder.train_preprocess
    if getattr(modelpool, "_test_processor", None) is None and hasattr(encoder, "val_preprocess"):
        modelpool._test_processor = encoder.val_preprocess
