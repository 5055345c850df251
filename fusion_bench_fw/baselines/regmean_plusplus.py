"""FusionBench's RegMean++ for CLIP, made constructible (a workaround for a FusionBench 0.2.33 bug).

``RegMeanAlgorithmForCLIPPlusPlus`` declares ``_config_mapping`` as a plain dict, replacing the
bidict its parent's ``@auto_register_config`` relies on, so building it from its own config
(``method=regmean_plusplus/clip_regmean_plusplus``) fails with ``AttributeError: 'dict' object
has no attribute 'inverse'``. This subclass restores the parent's mapping plus the dataloader
option; nothing else changes. Use ``method=regmean_plusplus_clip``.
"""

from __future__ import annotations

from bidict import bidict

from fusion_bench.method.regmean_plusplus.clip_regmean_plusplus import RegMeanAlgorithmForCLIPPlusPlus
from fusion_bench.method.regmean_plusplus.regmean_plusplus import RegMeanAlgorithmPlusPlus


class RegMeanPlusPlusForCLIP(RegMeanAlgorithmForCLIPPlusPlus):
    _config_mapping = bidict({**RegMeanAlgorithmPlusPlus._config_mapping, "_dataloader_kwargs": "dataloader_kwargs"})
