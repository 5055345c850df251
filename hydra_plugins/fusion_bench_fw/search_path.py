"""Makes the stock `fusion_bench` CLI see fusion-bench-fw's configs.

Hydra imports every module under the `hydra_plugins` namespace package at start-up and calls
each `SearchPathPlugin`. We append two entries:

* ``fusion_bench_fw/config`` (the repo's top-level ``config/``) - our method/modelpool/taskpool configs;
* ``pkg://fusion_bench_config`` - fusion-bench's own configs. fusion-bench picks ``./config`` as
  Hydra's *primary* config dir when the working directory has one (our repo root does), which
  hides ``fabric_model_fusion.yaml``; appending the built-in package keeps the CLI working from
  any directory. Appended entries lose name clashes to the primary dir, so our config names
  never reuse a built-in name.
"""

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

import fusion_bench_fw

_CONFIG_DIR = Path(fusion_bench_fw.__file__).resolve().parent / "config"


class FusionBenchFWSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="fusion-bench-fw", path=f"file://{_CONFIG_DIR}")
        search_path.append(provider="fusion-bench-fw-base", path="pkg://fusion_bench_config")
