"""Model families: the one place that knows what kind of model a pool holds (see ``base.py``)."""

from __future__ import annotations

from typing import Dict, List, Optional, Type

from .base import ModelFamily

_EXTRA: List[Type[ModelFamily]] = []


def register_family(family: Type[ModelFamily]) -> Type[ModelFamily]:
    """Make ``family`` available to FWHard/FWSoft (``method.model_family=<its name>``, or chosen
    automatically for the pools it accepts, after the built-in families); usable as a decorator."""
    if family not in _EXTRA:
        _EXTRA.append(family)
    return family


def registered() -> Dict[str, Type[ModelFamily]]:
    """Family name -> class. Built-ins are imported lazily: each pulls in its own FusionBench modules."""
    from .causal_lm import CausalLMFamily
    from .clip_vision import CLIPVisionFamily
    from .gpt2_classification import GPT2ClassificationFamily
    from .openclip_vision import OpenCLIPVisionFamily
    from .seq2seq import Seq2SeqFamily

    built_in = (CLIPVisionFamily, OpenCLIPVisionFamily, CausalLMFamily, GPT2ClassificationFamily, Seq2SeqFamily)
    return {family.name: family for family in (*built_in, *_EXTRA)}


def family_for(modelpool, name: Optional[str] = None) -> Type[ModelFamily]:
    """The family named ``name``, or the first registered family that accepts ``modelpool``."""
    families = registered()
    if name is not None:
        if name not in families:
            raise ValueError(f"invalid model_family={name!r}; allowed values: {', '.join(families)} (or null to choose from the pool)")
        return families[name]
    for family in families.values():
        if family.accepts(modelpool):
            return family
    raise ValueError(
        f"FW-Merging has no model family for a {type(modelpool).__name__}; the families are "
        f"{'; '.join(f'{n} ({c.description})' for n, c in families.items())}. Set method.model_family "
        f"to one of them to use it with this pool"
    )


__all__ = ["ModelFamily", "family_for", "register_family", "registered"]
