"""Linear minimization oracle over a stream of checkpoints.

One streaming pass computes, for every candidate vertex s_i and every parameter block b, the inner
products <g_b, s_i,b> (for each gradient row: the total objective and, optionally, each task),
<s_i,b, s_i,b> and <s_i,b, theta_b>. That is all any selection rule needs:

* ``inner_product`` score of block b: <g_b, s_b - theta_b>   (eq. 7 / eq. 10, exact)
* ``cosine`` score of block b: cos(g_b, s_b - theta_b)       (heuristic of the upstream code)

Task-wise selection sums block scores over blocks; layer-wise (block-coordinate) selection picks
per block. Only one checkpoint is resident during the pass.

Two orders of the same pass: vertex-major (stream one checkpoint, dot it with every gradient row)
works with any source; block-major (for one parameter block, read the slices of a group of vertices
and multiply them with all gradient rows at once) reads each gradient block once per group instead of
once per vertex, which matters when there are several rows (FW-soft: total + one per task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Protocol, Sequence, Tuple

import torch

from .device_pipeline import score_group_on_device
from .params import ParamDict, block_dots

SCORES = ("inner_product", "cosine")
GRANULARITIES = ("task", "layer")


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
BLOCK_MAJOR_MIN_PRODUCTS = 2


def use_device_pipeline(device: torch.device) -> bool:
    """Rows on an accelerator: score block-major through device_pipeline.py (tests force it on the CPU)."""
    return device.type != "cpu"


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


@dataclass
class VertexScores:
    """Everything one LMO pass learned; tensors are float64, shape ``[n_vertices, n_blocks]``."""

    grad_dots: Dict[str, torch.Tensor]  # row key -> <g_b, s_i,b>
    theta_grad_dots: Dict[str, torch.Tensor]  # row key -> <g_b, theta_b>, shape [n_blocks]
    # the norms below serve only the cosine score: None unless score_vertices(..., with_norms=True)
    grad_sq: Optional[Dict[str, torch.Tensor]]  # row key -> ||g_b||^2, shape [n_blocks]
    vertex_sq: Optional[torch.Tensor]  # ||s_i,b||^2
    vertex_theta: Optional[torch.Tensor]  # <s_i,b, theta_b>
    theta_sq: Optional[torch.Tensor]  # ||theta_b||^2, shape [n_blocks]

    @property
    def num_vertices(self) -> int:
        return next(iter(self.grad_dots.values())).shape[0]

    def block_scores(self, kind: str, row: str = "total") -> torch.Tensor:
        """Per-vertex, per-block LMO score (lower = better descent direction)."""
        linear = self.grad_dots[row] - self.theta_grad_dots[row].unsqueeze(0)
        if kind == "inner_product":
            return linear
        if kind == "cosine":
            if self.vertex_sq is None or self.vertex_theta is None or self.grad_sq is None or self.theta_sq is None:
                raise ValueError("cosine scores need the vertex norms: call score_vertices(..., with_norms=True)")
            dist_sq = (self.vertex_sq - 2 * self.vertex_theta + self.theta_sq.unsqueeze(0)).clamp_min(0)
            denom = (dist_sq * self.grad_sq[row].unsqueeze(0)).sqrt().clamp_min(1e-30)
            return linear / denom
        raise ValueError(f"unknown LMO score {kind!r}; allowed: {', '.join(SCORES)}")

    def linear_terms(self, row: str = "total") -> torch.Tensor:
        """<g_b, s_i,b - theta_b>: the exact first-order change of the objective, per block."""
        return self.block_scores("inner_product", row)


def score_vertices(
    source: VertexSource,
    theta: Mapping[str, torch.Tensor],
    grads: Mapping[str, Mapping[str, torch.Tensor]],
    names: Sequence[str],
    shard: Tuple[int, int] = (0, 1),
    all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    with_norms: bool = True,
    block_group: int = BLOCK_GROUP,
) -> VertexScores:
    """Read every candidate once and collect the inner products (see module docstring).

    With ``shard=(rank, world_size)`` this process scores only vertices ``rank::world_size``; the
    zero-filled score tables are then summed across processes by ``all_reduce`` (one call), so
    every process ends with the full tables while each checkpoint was read by one process only.
    ``with_norms=False`` skips every product only the cosine score needs (the vertex norms and the
    per-pass ``grad_sq``/``theta_sq``, left None).

    If the source has a ``block_reader`` and a vertex needs more than one product per block (several
    gradient rows, or the norms), vertices are scored block-major in groups of at most
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
    open_reader = getattr(source, "block_reader", None)
    pipelined = bool(names) and use_device_pipeline(next(iter(grads.values()))[names[0]].device)
    if open_reader is None or (not pipelined and len(grads) + int(with_norms) < BLOCK_MAJOR_MIN_PRODUCTS):
        _score_streamed(source.stream(mine), theta, grads, names, grad_dots, norms)
    else:
        # as few groups as block_group allows (each one reads the rows once), of even sizes
        count = -(-len(mine) // int(block_group))
        for g in range(count):
            group = mine[g * len(mine) // count : (g + 1) * len(mine) // count]
            reader = open_reader(group)
            if reader is None:
                _score_streamed(source.stream(group), theta, grads, names, grad_dots, norms)
                continue
            fuse_theta = world_size == 1 and theta_grad_dots is None
            with reader as blocks:
                fused = _score_blocks(blocks, group, [source.names[i] for i in group], theta, grads, names, grad_dots, norms, fuse_theta)
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


def _score_blocks(reader: BlockReader, group: List[int], labels: List[str], theta, grads, names, grad_dots, norms, with_theta: bool) -> Optional[Dict[str, torch.Tensor]]:
    """Block-major for one group: per block, tiles of the group's slices times the stacked rows.

    The rows are the gradient rows (plus theta when the cosine norms are wanted), stacked tile by
    tile in the dtype of the first row, on its device, as ``block_dots`` computes; each tile's
    products are widened to float64 before they are summed. ``with_theta`` adds theta as one more
    column next to the group's vertices and returns <g_b, theta_b> per row (else None).
    """
    keys = list(grads)
    k = len(group)
    for name in names:
        if reader.numel(name) != grads[keys[0]][name].numel():
            raise ValueError(
                f"parameter {name!r} has {reader.numel(name)} elements in checkpoint(s) {labels} but {grads[keys[0]][name].numel()} in the "
                f"merged model: the checkpoints must share the pretrained model's architecture"
            )
    if use_device_pipeline(grads[keys[0]][names[0]].device):
        return _score_blocks_on_device(reader, group, theta, grads, names, grad_dots, norms, with_theta)
    columns = k + int(with_theta)
    theta_dots = {key: torch.zeros(len(names), dtype=torch.float64) for key in keys} if with_theta else None
    buffers: Dict[str, torch.Tensor] = {}

    def scratch(key: str, size: int, like: torch.Tensor, device) -> torch.Tensor:
        """Reused across blocks: a fresh multi-MB tensor per block would fault in new pages each time."""
        buffer = buffers.get(key)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype or buffer.device != torch.device(device):
            buffer = buffers[key] = torch.empty(size, dtype=like.dtype, device=device)
        return buffer[:size]

    for b, name in enumerate(names):
        rows = [grads[key][name] for key in keys] + ([theta[name]] if norms else [])
        like = rows[0]
        numel = like.numel()
        tile = max(1, CPU_TILE_BYTES // (columns * like.element_size()))
        slab = max(tile, CPU_READ_BYTES // like.element_size())
        flat = [row.reshape(-1).to(device=like.device, dtype=like.dtype) for row in rows]
        theta_flat = theta[name].reshape(-1).to(dtype=like.dtype, device="cpu") if with_theta else None
        width = min(slab, numel)
        column_buffer = scratch("columns", columns * width, like, "cpu")
        row_buffer = scratch("rows", len(rows) * min(tile, numel), like, like.device)
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


def with_combined_row(scores: VertexScores, key: str, weights: Mapping[str, float], grad_sq: Optional[torch.Tensor] = None) -> VertexScores:
    """``scores`` plus a row ``key`` = sum_r weights[r] * row r, without reading any vertex again:
    <sum_r w_r g_r, s> = sum_r w_r <g_r, s> (FW-soft's total gradient is the weighted sum of its
    per-task rows, so its pass reads the vertices against one row fewer). ``grad_sq`` (its per-block
    squared norm) is not a function of the rows' tables: give it when the norms are kept (cosine)."""

    def combine(table: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(float(w) * table[row] for row, w in weights.items())

    if scores.grad_sq is not None and grad_sq is None:
        raise ValueError(f"row {key!r}: these scores keep the norms (cosine), so its grad_sq must be given")
    return VertexScores(
        grad_dots={**scores.grad_dots, key: combine(scores.grad_dots)},
        theta_grad_dots={**scores.theta_grad_dots, key: combine(scores.theta_grad_dots)},
        grad_sq=None if scores.grad_sq is None else {**scores.grad_sq, key: grad_sq.to(torch.float64)},
        vertex_sq=scores.vertex_sq,
        vertex_theta=scores.vertex_theta,
        theta_sq=scores.theta_sq,
    )


def _admissible(block: torch.Tensor, excluded: Iterable[int]) -> torch.Tensor:
    """Scores with excluded vertices pushed to +inf, so no selection rule can pick them."""
    excluded = list(excluded)
    if not excluded:
        return block
    block = block.clone()
    block[excluded] = float("inf")
    return block


def select_hard(scores: VertexScores, granularity: str, score: str, excluded: Iterable[int] = ()) -> torch.Tensor:
    """Winning vertex index per block (shape ``[n_blocks]``): argmin of the LMO score."""
    block = _admissible(scores.block_scores(score), excluded)
    if granularity == "task":
        winner = int(block.sum(dim=1).argmin())
        return torch.full((block.shape[1],), winner, dtype=torch.long)
    if granularity == "layer":
        return block.argmin(dim=0)
    raise ValueError(f"unknown LMO granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}")


def select_soft(scores: VertexScores, granularity: str, score: str, k: int, rows: Sequence[str], excluded: Iterable[int] = ()) -> List[Tuple[torch.Tensor, List[str]]]:
    """Top-k directions, each a per-block vertex index vector, with the rows that chose it.

    With several gradient rows (one per objective task) each row contributes its own top-k and the
    union is kept in order, without duplicates: the paper's task-wise top-k for multi-task objectives.
    """
    excluded = list(excluded)
    k = min(k, scores.num_vertices - len(excluded))
    directions: List[Tuple[torch.Tensor, List[str]]] = []
    seen: Dict[tuple, List[str]] = {}
    for row in rows:
        block = _admissible(scores.block_scores(score, row), excluded)
        if granularity == "task":
            order = block.sum(dim=1).argsort()[:k]
            candidates = [torch.full((block.shape[1],), int(i), dtype=torch.long) for i in order]
        elif granularity == "layer":
            order = block.argsort(dim=0)[:k]  # [k, n_blocks]
            candidates = [order[j].clone() for j in range(order.shape[0])]
        else:
            raise ValueError(f"unknown LMO granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}")
        for candidate in candidates:
            key = tuple(candidate.tolist())
            if key in seen:
                seen[key].append(row)
            else:
                seen[key] = [row]
                directions.append((candidate, seen[key]))
    return directions


def fw_gap(scores: VertexScores, selection: torch.Tensor, row: str = "total") -> float:
    """FW gap <-g, s - theta> (eq. 4) for a stitched vertex given by per-block indices."""
    linear = scores.linear_terms(row)
    return float(-linear.gather(0, selection.unsqueeze(0)).sum())


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
