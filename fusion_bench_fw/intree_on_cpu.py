"""FusionBench's ``fusion_bench`` command with ``.cuda()`` made a no-op, for CPU-only machines.

FusionBench 0.2.33's in-tree FW-Merging (``method=fw_merging/fw_soft`` / ``fw_hard``) calls ``.cuda()``
on models and tensors unconditionally, so without a GPU it cannot run at all. The comparison harness
runs it through this launcher -- the same program, configs, model pool and task pool as every other
method -- and labels its rows as run this way. Nothing else is changed.

    python -m fusion_bench_fw.intree_on_cpu method=fw_merging/fw_soft modelpool=... taskpool=...
"""

from __future__ import annotations

import sys

import torch


def make_cuda_calls_noops() -> None:
    """``Module.cuda`` and ``Tensor.cuda`` return the object itself (it stays on the CPU)."""
    torch.nn.Module.cuda = lambda self, device=None: self
    torch.Tensor.cuda = lambda self, *args, **kwargs: self


def main() -> None:
    make_cuda_calls_noops()
    from fusion_bench.scripts.cli import _hydra_main

    sys.argv[0] = "fusion_bench"
    sys.exit(_hydra_main())


if __name__ == "__main__":
    main()
