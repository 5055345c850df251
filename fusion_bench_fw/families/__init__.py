"""Model families: the one place that knows what kind of model a pool holds (see ``base.py``)."""

from __future__ import annotations

from typing import Dict, Optional, Type

from .base import ModelFamily


def registered() -> Dict[str, Type[ModelFamily]]:
    """Family name -> class. Imported lazily: each family pulls in its own FusionBench modules."""
    from .clip_vision import CLIPVisionFamily

    return {family.name: family for family in (CLIPVisionFamily,)}


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
        f"FW-Merging has no model family for a {type(modelpool).__name__}: supported pools are those of the families "
        f"{', '.join(f'{n} ({c.__doc__.strip().splitlines()[0]})' for n, c in families.items())}; set method.model_family "
        f"to use one of them with this pool"
    )


__all__ = ["ModelFamily", "family_for", "registered"]
