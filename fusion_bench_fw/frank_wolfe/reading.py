"""Reading the checkpoints for the LMO: one pass that fills the tables of ``lmo.VertexScores``.

One streaming pass computes, for every candidate vertex s_i and every parameter block b, the inner
products <g_b, s_i,b> (one per gradient row), and for the cosine score <s_i,b, s_i,b> and
<s_i,b, theta_b>. Only one checkpoint (or one parameter slice per vertex of a group) is resident.

The same tables come from one of three orders (:class:`PassOrder`), chosen once per run by
:func:`choose_order` and reported in the run's summary:

* ``vertex_major``: stream one checkpoint, dot it with every gradient row (works with any source);
* ``block_major``: for one parameter, read the slices of a group of vertices and multiply them
  with all gradient rows at once, which reads each gradient block once per group instead of once
  per vertex (pays when a vertex meets several rows: FW-soft's total + one row per task);
* ``device_pipeline``: block-major on an accelerator with the reads overlapped with the transfers
  (``device_pipeline.py``).

:func:`assemble` is the second, smaller pass: it materializes the stitched vertices a step needs.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Protocol, Sequence, Tuple

import torch

from .device_pipeline import score_group_on_device
from .lmo import VertexScores
from .params import ParamDict, accumulation_dtype, block_dots

# vertices scored together per block in the block-major pass (see score_vertices)
BLOCK_GROUP = 16
# on the CPU the block-major pass reads each vertex's block in slices of CPU_READ_BYTES (fewer read
# calls), and multiplies tiles spanning CPU_TILE_BYTES of the group's vertices, so a tile and the
# gradient rows' matching slices stay in cache while one matmul consumes them (one matmul over
# whole blocks ran 1.5-2.5x slower here: the stacked vertices spill to memory and are read twice)
CPU_READ_BYTES = 1 << 20
CPU_TILE_BYTES = 1 << 20
# block-major only pays when a vertex meets more than one row: with a single product per block, a
# memory-mapped vertex dotted in place (vertex-major) skips the copy into the tile (measured with
# benchmarks/lmo_block_major.py, 8 CLIP ViT-B/32 checkpoints: 1.4-1.8x vs 1.7-2.1x a raw read).
# On an accelerator every vertex must cross to the device anyway, and the block-major pass overlaps
# the reads with the transfers (device_pipeline.py), so there it is used whatever the number of rows.
# Half-precision rows take it too: vertex-major then widens every gradient block once per vertex, and
# the streamed checkpoint is held whole (16 bf16 CLIP ViT-B/32: 0.69 s vs 0.79 s, +0 vs +167 MB RSS).
BLOCK_MAJOR_MIN_PRODUCTS = 2


class PassOrder(str, Enum):
    VERTEX_MAJOR = "vertex_major"
    BLOCK_MAJOR = "block_major"
    DEVICE_PIPELINE = "device_pipeline"


def use_device_pipeline(device: torch.device) -> bool:
    """Rows on an accelerator: score block-major through device_pipeline.py (tests force it on the CPU)."""
    return device.type != "cpu"


def choose_order(source, device: torch.device, products: int, dtype: torch.dtype = torch.float32) -> PassOrder:
    """The pass order for a source, the device and dtype of the gradient rows and the number of
    products each vertex meets per block (gradient rows, + 1 when the cosine norms are kept)."""
    if getattr(source, "block_reader", None) is None:
        return PassOrder.VERTEX_MAJOR
    if use_device_pipeline(device):
        return PassOrder.DEVICE_PIPELINE
    if products >= BLOCK_MAJOR_MIN_PRODUCTS or accumulation_dtype(dtype) != dtype:
        return PassOrder.BLOCK_MAJOR
    return PassOrder.VERTEX_MAJOR


class VertexSource(Protocol):
    """Candidate vertices (fine-tuned checkpoints), yielded one at a time.

    Optional capability: ``block_reader(indices)`` returning ``None`` (not possible for these
    vertices) or a context manager that yields a :class:`BlockReader` over them.
    """

    names: Sequence[str]

    def stream(self, indices: Optional[Iterable[int]] = None) -> Iterator[Tuple[int, ParamDict]]:
        ...


class BlockReader(Protocol):
    """Slices of one parameter for a fixed group of vertices, so a block can be scored for all of them
    with one matmul without holding any whole checkpoint."""

    def numel(self, name: str) -> int:
        """Number of elements of parameter ``name`` (the same for every vertex of the group)."""
        ...

    def stack(self, name: str, start: int = 0, stop: Optional[int] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Elements ``[start, stop)`` of the flattened parameter ``name`` of every vertex of the group,
        as a ``[group size, stop - start]`` CPU tensor; written into ``out`` (cast to its dtype) if given."""
        ...



def score_vertices(
    source: VertexSource,
    theta: Mapping[str, torch.Tensor],
    grads: Mapping[str, Mapping[str, torch.Tensor]],
    names: Sequence[str],
    shard: Tuple[int, int] = (0, 1),
    all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    with_norms: bool = True,
    block_group: int = BLOCK_GROUP,
    order: Optional[PassOrder] = None,
) -> VertexScores:
    """Read every candidate once and collect the inner products (see module docstring).

    With ``shard=(rank, world_size)`` this process scores only vertices ``rank::world_size``; the
    zero-filled score tables are then summed across processes by ``all_reduce`` (one call), so
    every process ends with the full tables while each checkpoint was read by one process only.
    ``with_norms=False`` skips every product only the cosine score needs (the vertex norms and the
    per-pass ``grad_sq``/``theta_sq``, left None).

    ``order`` (default: :func:`choose_order`) says how the vertices are read. Block-major scores
    them in groups of at most
    ``block_group``: per parameter block, the group's slices are multiplied with all gradient rows at
    once, so each gradient block is read once per group instead of once per vertex (memory traffic
    per vertex ~ (1 + rows / group) x the model instead of (1 + rows) x); in a single process the
    first group also carries theta, which gives <g_b, theta_b> without another sweep over the rows.
    Extra memory: on the CPU ``CPU_READ_BYTES`` per vertex of the group (16 MiB for 16) plus one
    tile of the rows (under 1 MiB); on an accelerator (where even one row is scored block-major)
    the pinned chunk buffers of ``device_pipeline.py`` (8 x 16 MiB) and the chunks in flight on the
    device; never more with a larger n. A group the source cannot read that way (``block_reader`` returns None) is
    streamed vertex-major. Both orders agree to the rounding of the compute dtype (the tests allow
    1e-5 x ||g_b|| ||s_b|| per block in float32).
    """
    if int(block_group) < 1:
        raise ValueError(f"block_group must be >= 1, got {block_group}")
    n = len(source.names)
    rank, world_size = shard
    grad_dots = {key: torch.zeros(n, len(names), dtype=torch.float64) for key in grads}
    norms = {"vertex_sq": torch.zeros(n, len(names), dtype=torch.float64), "vertex_theta": torch.zeros(n, len(names), dtype=torch.float64)} if with_norms else {}
    # sharded, every process computes <g_b, theta_b> the same way (block_dots), so all agree bit for bit
    theta_grad_dots: Optional[Dict[str, torch.Tensor]] = None
    mine = list(range(rank, n, world_size))
    if order is None:
        first = next(iter(grads.values()))[names[0]] if names else torch.zeros(0)
        order = choose_order(source, first.device, len(grads) + int(with_norms), first.dtype)
    if order is PassOrder.VERTEX_MAJOR:
        _score_streamed(source.stream(mine), theta, grads, names, grad_dots, norms)
    else:
        # as few groups as block_group allows (each one reads the rows once), of even sizes
        count = -(-len(mine) // int(block_group))
        for g in range(count):
            group = mine[g * len(mine) // count : (g + 1) * len(mine) // count]
            reader = source.block_reader(group)
            if reader is None:  # e.g. a group with a checkpoint only the pool's loader can read
                _score_streamed(source.stream(group), theta, grads, names, grad_dots, norms)
                continue
            fuse_theta = world_size == 1 and theta_grad_dots is None
            with reader as blocks:
                fused = _score_blocks(blocks, group, [source.names[i] for i in group], theta, grads, names, grad_dots, norms, fuse_theta, order)
            if fuse_theta:
                theta_grad_dots = fused
    if world_size > 1:
        if all_reduce is None:
            raise ValueError("a sharded LMO pass needs all_reduce to combine the shards")
        tables = {**{f"grad:{k}": v for k, v in grad_dots.items()}, **norms}
        stacked = all_reduce(torch.stack(list(tables.values())))
        tables = dict(zip(tables, stacked))
        grad_dots = {k: tables[f"grad:{k}"] for k in grad_dots}
        norms = {k: tables[k] for k in norms}
    if theta_grad_dots is None:
        theta_grad_dots = {key: block_dots(grad, theta, names) for key, grad in grads.items()}
    return VertexScores(
        grad_dots=grad_dots,
        theta_grad_dots=theta_grad_dots,
        grad_sq={key: block_dots(grad, grad, names) for key, grad in grads.items()} if with_norms else None,
        vertex_sq=norms.get("vertex_sq"),
        vertex_theta=norms.get("vertex_theta"),
        theta_sq=block_dots(theta, theta, names) if with_norms else None,
    )


def _score_streamed(stream, theta, grads, names, grad_dots, norms) -> None:
    """Vertex-major: each streamed checkpoint is dotted with every gradient row, block by block."""
    for index, vertex in stream:
        for key, grad in grads.items():
            grad_dots[key][index] = block_dots(grad, vertex, names)
        if norms:
            norms["vertex_sq"][index] = block_dots(vertex, vertex, names)
            norms["vertex_theta"][index] = block_dots(theta, vertex, names)
        del vertex


def _score_blocks(reader: BlockReader, group: List[int], labels: List[str], theta, grads, names, grad_dots, norms, with_theta: bool, order: PassOrder) -> Optional[Dict[str, torch.Tensor]]:
    """Block-major for one group: per block, tiles of the group's slices times the stacked rows.

    The rows are the gradient rows (plus theta when the cosine norms are wanted), stacked tile by
    tile on the first row's device in its accumulation dtype (float32 for half precision), as
    ``block_dots`` computes; each tile's products are widened to float64 before they are summed.
    ``with_theta`` adds theta as one more column next to the group's vertices and returns
    <g_b, theta_b> per row (else None).
    """
    keys = list(grads)
    k = len(group)
    for name in names:
        if reader.numel(name) != grads[keys[0]][name].numel():
            raise ValueError(
                f"parameter {name!r} has {reader.numel(name)} elements in checkpoint(s) {labels} but {grads[keys[0]][name].numel()} in the "
                f"merged model: the checkpoints must share the pretrained model's architecture"
            )
    if order is PassOrder.DEVICE_PIPELINE:
        return _score_blocks_on_device(reader, group, theta, grads, names, grad_dots, norms, with_theta)
    columns = k + int(with_theta)
    theta_dots = {key: torch.zeros(len(names), dtype=torch.float64) for key in keys} if with_theta else None
    buffers: Dict[str, torch.Tensor] = {}

    def scratch(key: str, size: int, dtype: torch.dtype, device) -> torch.Tensor:
        """Reused across blocks: a fresh multi-MB tensor per block would fault in new pages each time."""
        buffer = buffers.get(key)
        if buffer is None or buffer.numel() < size or buffer.dtype != dtype or buffer.device != torch.device(device):
            buffer = buffers[key] = torch.empty(size, dtype=dtype, device=device)
        return buffer[:size]

    for b, name in enumerate(names):
        rows = [grads[key][name] for key in keys] + ([theta[name]] if norms else [])
        like = rows[0]
        work = accumulation_dtype(like.dtype)
        numel = like.numel()
        tile = max(1, CPU_TILE_BYTES // (columns * work.itemsize))
        slab = max(tile, CPU_READ_BYTES // work.itemsize)
        # rows and theta keep their dtypes: the copies into the tiles widen them
        flat = [row.reshape(-1).to(device=like.device) for row in rows]
        theta_flat = theta[name].reshape(-1).to(device="cpu") if with_theta else None
        width = min(slab, numel)
        column_buffer = scratch("columns", columns * width, work, "cpu")
        row_buffer = scratch("rows", len(rows) * min(tile, numel), work, like.device)
        dots = torch.zeros(len(rows), columns, dtype=torch.float64, device=like.device)
        squares = torch.zeros(k, dtype=torch.float64, device=like.device) if norms else None
        for start in range(0, numel, slab):
            w = min(slab, numel - start)
            slices = column_buffer[: columns * w].view(columns, w)
            reader.stack(name, start, start + w, out=slices[:k])
            if with_theta:
                slices[k].copy_(theta_flat[start : start + w])
            for offset in range(0, w, tile):
                v = min(tile, w - offset)
                part = slices[:, offset : offset + v]
                lo = start + offset
                stacked_rows = torch.stack([row[lo : lo + v] for row in flat], out=row_buffer[: len(rows) * v].view(len(rows), v))
                dots += torch.mm(stacked_rows, part.t())
                if squares is not None:
                    squares += torch.linalg.vecdot(part[:k], part[:k], dim=1)
        dots = dots.cpu()
        for r, key in enumerate(keys):
            grad_dots[key][group, b] = dots[r, :k]
            if theta_dots is not None:
                theta_dots[key][b] = dots[r, k]
        if norms:
            norms["vertex_theta"][group, b] = dots[len(keys), :k]
            norms["vertex_sq"][group, b] = squares.cpu()
    return theta_dots


def _score_blocks_on_device(reader: BlockReader, group: List[int], theta, grads, names, grad_dots, norms, with_theta: bool) -> Optional[Dict[str, torch.Tensor]]:
    """The accelerator version of :func:`_score_blocks` (same tables), reads overlapped with transfers."""
    keys = list(grads)
    rows = [grads[key] for key in keys] + ([theta] if norms else [])
    dots, fused, squares = score_group_on_device(reader, len(group), names, rows, fused=theta if with_theta else None, squares=bool(norms))
    for r, key in enumerate(keys):
        grad_dots[key][group] = dots[:, r, :].t()
    if norms:
        norms["vertex_theta"][group] = dots[:, len(keys), :].t()
        norms["vertex_sq"][group] = squares.t()
    return {key: fused[:, r].clone() for r, key in enumerate(keys)} if with_theta else None




def assemble(source: VertexSource, selections: Sequence[torch.Tensor], names: Sequence[str], like: Mapping[str, torch.Tensor]) -> List[ParamDict]:
    """Materialize stitched vertices: block b of direction j comes from vertex ``selections[j][b]``.

    A second streaming pass over only the vertices that won some block; at most ``len(selections)``
    assembled points plus one streamed checkpoint are resident.
    """
    needed = sorted({int(i) for selection in selections for i in selection.tolist()})
    out: List[ParamDict] = [{} for _ in selections]
    for index, vertex in source.stream(needed):
        for j, selection in enumerate(selections):
            for b, name in enumerate(names):
                if int(selection[b]) == index:
                    out[j][name] = vertex[name].to(device=like[name].device, dtype=like[name].dtype).clone()
        del vertex
    return out
