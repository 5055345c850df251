"""The accelerator path of the LMO pass on a real CUDA device (skipped without one: CI has no GPU).

The same pipeline is tested on the CPU in test_engine.py (forced); here the pinned buffers, the
asynchronous copies and the events that guard buffer reuse run for real.
"""

from __future__ import annotations

import pytest
import torch
from engine_toys import ListSource, assert_same_scores, random_lmo_case
from test_checkpoints import FakePool, write_models

from fusion_bench_fw.checkpoints import PoolCheckpoints
from fusion_bench_fw.frank_wolfe import device_pipeline, reading, score_vertices

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def on_cuda(point):
    return {name: tensor.cuda() for name, tensor in point.items()}


@pytest.mark.parametrize("with_norms", [False, True])
@pytest.mark.parametrize("rows", [1, 3])
def test_cuda_lmo_pass_matches_the_cpu_pass(tmp_path, monkeypatch, with_norms, rows):
    names, vertices, theta, grads = random_lmo_case(seed=8, n=5, rows=rows)
    names = [name for name in names if name != "scalar"]  # one-element blocks: cosine ties broken by rounding
    models = write_models(tmp_path, vertices)
    reference = score_vertices(ListSource(list(models), vertices), theta, grads, names, with_norms=with_norms)
    monkeypatch.setattr(device_pipeline, "DEVICE_CHUNK_BYTES", 3 * 4 * 7)  # many chunks, every buffer reused
    source = PoolCheckpoints(FakePool(models), list(models), names)
    on_device = score_vertices(source, on_cuda(theta), {key: on_cuda(row) for key, row in grads.items()}, names, with_norms=with_norms, block_group=3)
    assert source.block_loads == 5 and source.peak_alive == 0
    assert_same_scores(reference, on_device, vertices, theta, grads, names)


def test_cuda_assembly_copies_the_selected_blocks(tmp_path, monkeypatch):
    names, vertices, theta, _ = random_lmo_case(seed=12, n=4)
    models = write_models(tmp_path, vertices)
    monkeypatch.setattr(device_pipeline, "DEVICE_CHUNK_BYTES", 4 * 5)
    selections = [torch.tensor([0, 2, 2, 1, 0]), torch.tensor([2, 2, 3, 1, 0])]
    gathered = reading.assemble(PoolCheckpoints(FakePool(models), list(models), names), selections, names, on_cuda(theta))
    for j, selection in enumerate(selections):
        for b, name in enumerate(names):
            assert gathered[j][name].is_cuda
            assert torch.equal(gathered[j][name].cpu(), vertices[int(selection[b])][name])
