"""Block-major LMO scoring on an accelerator, with the checkpoint reads overlapped with the transfers.

On a GPU the products of the LMO pass are nearly free: the pass is bound by moving checkpoint bytes
from the page cache (or the disk) to the device. Done in order -- read a block into pageable memory,
copy it (a synchronous copy from pageable memory), multiply, copy the result back -- every stage waits
for the previous one. Here a few reader threads fill pinned host buffers with the next chunks
(positioned reads release the GIL) while the current chunk is copied asynchronously and multiplied,
and the per-block results stay on the device until one copy back at the end.

Extra memory: ``READ_THREADS * BUFFERS_PER_THREAD`` host buffers of ``DEVICE_CHUNK_BYTES`` (pinned on
CUDA), whatever the number of checkpoints; on the device, one chunk per buffer in flight (widened
to float32 there when the rows are half precision).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .params import accumulation_dtype

# one buffer holds a chunk of one parameter for every vertex of the group
DEVICE_CHUNK_BYTES = 16 << 20
READ_THREADS = 4
BUFFERS_PER_THREAD = 2


def score_group_on_device(
    reader,
    group_size: int,
    names: Sequence[str],
    rows: Sequence[Mapping[str, torch.Tensor]],
    fused: Optional[Mapping[str, torch.Tensor]] = None,
    squares: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Per-block products of the group's vertices (read through ``reader``, a ``BlockReader``) with
    every row, on the rows' device.

    Returns float64 CPU tensors: ``dots[b, r, j] = <rows[r]_b, vertex_j,b>``; with ``fused`` (a point
    on the device, e.g. theta) ``fused_dots[b, r] = <rows[r]_b, fused_b>``; with ``squares``
    ``vertex_sq[b, j] = ||vertex_j,b||^2``. Products run in the rows' accumulation dtype (float32 for
    half precision), per chunk, and are summed in float64, like the CPU pass.
    """
    first = rows[0][names[0]]
    device, dtype = first.device, first.dtype
    work = accumulation_dtype(dtype)
    numels = [reader.numel(name) for name in names]
    width = max(1, DEVICE_CHUNK_BYTES // (group_size * first.element_size()))
    chunks = [(b, name, start, min(width, numel - start)) for b, (name, numel) in enumerate(zip(names, numels)) for start in range(0, numel, width)]
    dots = torch.zeros(len(names), len(rows), group_size, dtype=torch.float64, device=device)
    fused_dots = torch.zeros(len(names), len(rows), dtype=torch.float64, device=device) if fused is not None else None
    vertex_sq = torch.zeros(len(names), group_size, dtype=torch.float64, device=device) if squares else None
    if not chunks:
        return dots.cpu(), None if fused_dots is None else fused_dots.cpu(), None if vertex_sq is None else vertex_sq.cpu()

    pinned = device.type == "cuda"
    slots = min(len(chunks), READ_THREADS * BUFFERS_PER_THREAD)
    largest = max(w for _, _, _, w in chunks)
    buffers = [torch.empty(group_size * largest, dtype=dtype, pin_memory=pinned) for _ in range(slots)]
    # the copy out of each buffer must finish before a reader overwrites it
    copied: List[Optional[torch.cuda.Event]] = [None] * slots

    def read(i: int) -> torch.Tensor:
        _, name, start, w = chunks[i]
        out = buffers[i % slots][: group_size * w].view(group_size, w)
        return reader.stack(name, start, start + w, out=out)

    flat_rows = [{name: row[name].reshape(-1) for name in names} for row in rows]
    flat_fused = {name: fused[name].reshape(-1).to(device=device, dtype=work) for name in names} if fused is not None else None
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="lmo-read") as pool:
        pending: Dict[int, Future] = {i: pool.submit(read, i) for i in range(slots)}
        for i, (b, name, start, w) in enumerate(chunks):
            host = pending.pop(i).result()
            part = host.to(device=device, non_blocking=True)  # on the CPU: the buffer itself
            slot = i % slots
            if pinned:
                copied[slot] = torch.cuda.Event()
                copied[slot].record()
            stacked = torch.stack([row[name][start : start + w] for row in flat_rows]).to(work)
            part = part.to(work)  # after the event: the widened copy is the device's own
            dots[b] += stacked @ part.t()
            if flat_fused is not None:
                fused_dots[b] += stacked @ flat_fused[name][start : start + w]
            if vertex_sq is not None:
                vertex_sq[b] += torch.linalg.vecdot(part, part, dim=1)
            following = i + slots
            if following < len(chunks):
                if copied[slot] is not None:
                    copied[slot].synchronize()
                pending[following] = pool.submit(read, following)
    return dots.cpu(), None if fused_dots is None else fused_dots.cpu(), None if vertex_sq is None else vertex_sq.cpu()
