"""PoolCheckpoints over real safetensors files: slice reads, the pool-loader fallback, the device pipeline."""

from __future__ import annotations

import pytest
import torch

from engine_toys import ListSource, assert_same_scores, random_lmo_case
from fusion_bench_fw.frank_wolfe import score_vertices

# --- PoolCheckpoints over real safetensors files ---------------------------------------------------

class FakePool:
    """What PoolCheckpoints reads of a FusionBench pool: ``_models`` (name -> model directory) and
    ``load_model``, here only allowed for the names in ``loadable``."""

    def __init__(self, models, loadable=None):
        self._models = models
        self.loadable = loadable or {}
        self.loaded = []

    def load_model(self, name):
        if name not in self.loadable:
            raise AssertionError(f"load_model({name!r}) called: the safetensors fast path was expected")
        self.loaded.append(name)
        return self.loadable[name]


class ParamModule(torch.nn.Module):
    def __init__(self, params):
        super().__init__()
        for name, tensor in params.items():
            self.register_parameter(name, torch.nn.Parameter(tensor.clone()))


class WithoutBlockReader:
    """Forces the vertex-major path on a source that has the block capability."""

    def __init__(self, source):
        self.source = source
        self.names = source.names

    def stream(self, indices=None):
        return self.source.stream(indices)


def write_models(directory, vertices, dtypes=None):
    from safetensors.torch import save_file

    models = {}
    for i, vertex in enumerate(vertices):
        folder = directory / f"m{i}"
        folder.mkdir()
        dtype = (dtypes or {}).get(i, torch.float32)
        save_file({k: v.to(dtype).contiguous() for k, v in vertex.items()}, str(folder / "model.safetensors"))
        models[f"m{i}"] = str(folder)
    return models


def test_pool_checkpoints_block_reader_reads_safetensors_slices(tmp_path):
    from fusion_bench_fw.checkpoints import PoolCheckpoints

    names, vertices, theta, grads = random_lmo_case(seed=6, n=4)
    # one bf16 and one fp16 checkpoint: read and cast to float32 like the vertex-major path does
    models = write_models(tmp_path, vertices, dtypes={1: torch.bfloat16, 2: torch.float16})
    pool = FakePool(models)
    source = PoolCheckpoints(pool, list(models), names)
    streamed = score_vertices(WithoutBlockReader(PoolCheckpoints(pool, list(models), names)), theta, grads, names, with_norms=True)
    blocked = score_vertices(source, theta, grads, names, with_norms=True, block_group=3)
    assert pool.loaded == [] and source.block_loads == 4 and source.loads == 4 and source.peak_alive == 0
    as_read = [{k: v.to(dtype).float() for k, v in vertex.items()} for vertex, dtype in zip(vertices, [torch.float32, torch.bfloat16, torch.float16, torch.float32])]
    assert_same_scores(streamed, blocked, as_read, theta, grads, names)
    # a direct read of a slice is the stored tensor's slice
    with source.block_reader([0, 3]) as reader:
        part = reader.stack("w", 5, 17)
        assert torch.equal(part, torch.stack([vertices[0]["w"].reshape(-1)[5:17], vertices[3]["w"].reshape(-1)[5:17]]))
        with pytest.raises(IndexError):
            reader.stack("w", 0, 40 * 33 + 1)
    source.validate({k: v for k, v in theta.items()})  # the validation pass still streams and checks
    # merging in bfloat16: the bf16 file is only widened into a float32 tile, the fp32 one rounded to
    # bf16 first (as a load in bf16 would); the reused scratch serves reads of any width
    with PoolCheckpoints(pool, list(models), names, dtype=torch.bfloat16).block_reader([1, 0]) as reader:
        for start, stop in ((0, 700), (3, 40), (100, 1300)):
            tile = reader.stack("w", start, stop, out=torch.empty(2, stop - start))
            flat = [vertices[i]["w"].reshape(-1)[start:stop].bfloat16().float() for i in (1, 0)]
            assert torch.equal(tile, torch.stack(flat))


def test_pool_checkpoints_falls_back_without_safetensors(tmp_path):
    from fusion_bench_fw.checkpoints import PoolCheckpoints

    names, vertices, theta, grads = random_lmo_case(seed=7, n=5)
    models = write_models(tmp_path, vertices)
    (tmp_path / "m3" / "model.safetensors").unlink()  # m3 only loads through the pool
    pool = FakePool(models, loadable={"m3": ParamModule(vertices[3])})
    source = PoolCheckpoints(pool, list(models), names)
    reference = score_vertices(ListSource(list(models), vertices), theta, grads, names)
    mixed = score_vertices(source, theta, grads, names, block_group=2)
    assert pool.loaded == ["m3"] and source.block_loads == 3 and source.loads == 5 and source.peak_alive == 1
    assert_same_scores(reference, mixed, vertices, theta, grads, names)
    # prefer_safetensors=False: no block reader at all
    assert PoolCheckpoints(pool, list(models), names, prefer_safetensors=False).block_reader([0, 1]) is None
    # a file without every merged parameter: no block reader (the regular loaders report the problem)
    assert PoolCheckpoints(pool, list(models), names + ["missing"]).block_reader([0, 1]) is None


@pytest.mark.parametrize("with_norms", [False, True])
@pytest.mark.parametrize("rows", [1, 3])
def test_device_pipeline_matches_the_cpu_pass(monkeypatch, tmp_path, with_norms, rows):
    """The accelerator path (reader threads filling a ring of buffers, products per chunk) run on the
    CPU: chunks of a few elements and a ring smaller than the chunk count make every buffer be reused
    while reads are in flight; the tables must equal the vertex-major pass's, from the real
    safetensors slice reader, also for a single gradient row (which the CPU pass streams)."""
    from fusion_bench_fw.checkpoints import PoolCheckpoints
    from fusion_bench_fw.frank_wolfe import device_pipeline, reading

    names, vertices, theta, grads = random_lmo_case(seed=8, n=5, rows=rows)
    models = write_models(tmp_path, vertices)
    pool = FakePool(models)
    reference = score_vertices(ListSource(list(models), vertices), theta, grads, names, with_norms=with_norms)
    monkeypatch.setattr(reading, "use_device_pipeline", lambda device: True)
    monkeypatch.setattr(device_pipeline, "DEVICE_CHUNK_BYTES", 3 * 4 * 7)  # 7 floats per vertex of a group of 3
    monkeypatch.setattr(device_pipeline, "READ_THREADS", 2)
    source = PoolCheckpoints(pool, list(models), names)
    piped = score_vertices(source, theta, grads, names, with_norms=with_norms, block_group=3)
    assert pool.loaded == [] and source.block_loads == 5 and source.peak_alive == 0  # all read as slices
    assert_same_scores(reference, piped, vertices, theta, grads, names)
