"""How fast can a CPU LMO pass over bf16 checkpoints be? Its steps, against a raw read of the files.

The block-major pass (``frank_wolfe/reading.py``) does three things per element of every fine-tune:
copy it out of the page cache (all a raw read does), widen it to float32 (torch has no CPU matmul of
bf16 inputs into a float32 result, and bf16 outputs would round close LMO scores together) and
multiply it with the gradient rows. This script times loops that do only some of that, on ``--n``
files of ``--mib`` MiB of random bf16 each, warm in the page cache, torch on one thread:

* ``raw read``: ``readinto`` of 1 MiB buffers, file after file (the cost benchmarks' reference);
* ``slab read``: per slab, ``--slab-kib`` of every file into one ``[n, columns]`` bf16 buffer
  (the block-major order), nothing else;
* ``+ widen + mm, R rows``: each slab then widened tile by tile into a float32 tile that stays in
  cache and multiplied with R float32 rows (R = 1: FW-hard with ``lmo_candidates=all``; R = 4: the
  total and 3 objective-task rows that ``task_winners`` scores);
* ``+ fused, R rows``: the same products from a ``torch.compile`` (inductor, C++) kernel that widens
  in registers, no float32 tile (only where a C++ compiler is found; checked against the above);
* ``+ widen + mm, R rows, reads one ahead on a second thread``: the second core reads the next slab
  while this one multiplies (file reads and torch kernels release the GIL).

    .venv/bin/python benchmarks/lmo_kernel_floor.py --n 16 --mib 64 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmo_block_major import raw_read  # noqa: E402  the cost benchmarks' reference: 1 MiB readinto, file after file

TILE_COLUMNS = 1 << 14  # 16 vertices x 16 Ki float32 = 1 MiB, the engine's CPU_TILE_BYTES


def make_files(work_dir: Path, n: int, mib: int):
    import torch

    work_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        path = work_dir / f"vertex_{i:02d}_{mib}mib.bf16"
        if not path.is_file() or path.stat().st_size != mib << 20:
            torch.manual_seed(i)
            path.write_bytes((torch.randn((mib << 20) // 2) * 0.02).to(torch.bfloat16).view(torch.uint8).numpy().tobytes())
        files.append(path)
    return files


def slab_pass(files, rows, tile_dots, slab_bytes: int, ahead: bool = False):
    """Block-major sweep: slabs of ``slab_bytes`` per file into ``[n, columns]`` bf16 buffers, then
    ``tile_dots(slab_tile, rows_tile)`` -> ``[R, n]`` per tile (None: read only), summed in float64.
    ``ahead``: a second thread reads the next slab into the other buffer meanwhile."""
    import torch

    columns = slab_bytes // 2
    buffers = [torch.empty(len(files), columns, dtype=torch.bfloat16) for _ in range(2 if ahead else 1)]
    views = [[memoryview(b[i].view(torch.uint8).numpy()) for i in range(len(files))] for b in buffers]
    handles = [open(f, "rb", buffering=0) for f in files]
    total = torch.zeros(rows.shape[0], len(files), dtype=torch.float64)

    def read(j: int) -> int:
        return min(h.readinto(v) for h, v in zip(handles, views[j % len(buffers)])) // 2

    try:
        with ThreadPoolExecutor(max_workers=1) as helper:
            pending = helper.submit(read, 0) if ahead else None
            start, j = 0, 0
            while True:
                w = pending.result() if ahead else read(j)
                if ahead and w:
                    pending = helper.submit(read, j + 1)
                if not w:
                    return total
                if tile_dots is not None:
                    slab = buffers[j % len(buffers)]
                    for lo in range(0, w, TILE_COLUMNS):
                        hi = min(w, lo + TILE_COLUMNS)
                        total += tile_dots(slab[:, lo:hi], rows[:, start + lo : start + hi])
                start, j = start + w, j + 1
    finally:
        for h in handles:
            h.close()


def widen_mm(tile, rows, scratch={}):
    import torch

    wide = scratch.setdefault(tile.shape[0], torch.empty(tile.shape[0] * TILE_COLUMNS))[: tile.numel()].view(tile.shape)
    wide.copy_(tile)
    return torch.mm(rows, wide.t())


def fused_kernel():
    """``widen_mm`` without the float32 tile, compiled by inductor; None without a C++ compiler."""
    import shutil

    import torch

    if shutil.which("g++") is None and shutil.which("c++") is None:
        return None
    return torch.compile(lambda tile, rows: (rows.unsqueeze(1) * tile.unsqueeze(0).float()).sum(-1), dynamic=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="number of vertices (files)")
    parser.add_argument("--mib", type=int, default=64, help="MiB of bf16 per vertex")
    parser.add_argument("--slab-kib", type=int, default=1024, help="KiB of each file per slab (the engine reads 1 MiB per vertex)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work-dir", default="/tmp/lmo_kernel_floor")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost" / "lmo_kernel_floor"))
    args = parser.parse_args()

    import torch

    from harness.machine import command_line, commit_of, describe, one_line
    from harness.report import write_json, write_lines

    torch.set_num_threads(1)
    files = make_files(Path(args.work_dir), args.n, args.mib)
    elements = (args.mib << 20) // 2
    slab = args.slab_kib << 10
    rows = {r: torch.randn(r, elements, generator=torch.Generator().manual_seed(r)) for r in (1, 4)}
    ops = {"raw read": lambda: raw_read(files), "slab read": lambda: slab_pass(files, rows[1], None, slab)}
    for r in (1, 4):
        ops[f"+ widen + mm, {r} row(s)"] = lambda r=r: slab_pass(files, rows[r], widen_mm, slab)
    fused, compile_s = fused_kernel(), None
    if fused is not None:
        start = time.perf_counter()
        for r in (1, 4):  # compile and check before timing
            got, want = slab_pass(files, rows[r], fused, slab), slab_pass(files, rows[r], widen_mm, slab)
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max())), (r, float((got - want).abs().max()))
        compile_s = time.perf_counter() - start
        for r in (1, 4):
            ops[f"+ fused, {r} row(s)"] = lambda r=r: slab_pass(files, rows[r], fused, slab)
    for r in (1, 4):
        ops[f"+ widen + mm, {r} row(s), reads one ahead on a second thread"] = lambda r=r: slab_pass(files, rows[r], widen_mm, slab, ahead=True)
    assert torch.equal(slab_pass(files, rows[4], widen_mm, slab, ahead=True), slab_pass(files, rows[4], widen_mm, slab))

    raw_read(files)  # warm
    times = {op: [] for op in ops}
    for repeat in range(args.repeats):
        for op, run in ops.items():
            start = time.perf_counter()
            run()
            times[op].append(time.perf_counter() - start)
        print(f"repeat {repeat}: " + ", ".join(f"{op} {t[-1]:.3f}" for op, t in times.items()), flush=True)

    medians = {op: statistics.median(t) for op, t in times.items()}
    raw = medians["raw read"]
    command, commit, machine = command_line(), commit_of(ROOT), describe()
    write_json(Path(args.out + ".json"), {"command": command, "commit": commit, "machine": machine, "n": args.n, "mib_per_vertex": args.mib,
                                          "slab_kib": args.slab_kib, "torch_threads": 1, "compile_and_check_s": compile_s, "seconds": times,
                                          "median_s": medians, "ratio_to_raw_read": {op: m / raw for op, m in medians.items()}})
    g_elements = args.n * elements / 1e9
    lines = [f"# The bf16 LMO pass's steps against a raw read ({args.n} files x {args.mib} MiB, warm page cache, one torch thread)", "",
             f"Command: `{command}` at {commit}  ", f"Machine: {one_line(machine)}  ",
             f"{args.repeats} repeats, interleaved; medians; {g_elements:.2f} G bf16 elements; slabs of {args.slab_kib} KiB per file, "
             f"tiles of {TILE_COLUMNS} columns."
             + (f" Fused kernel: torch.compile (inductor), {compile_s:.0f} s to compile and check." if compile_s else " No C++ compiler: no fused kernel."),
             "", "| operation | median s | G elements/s | / raw read |", "|---|---|---|---|"]
    lines += [f"| {op} | {m:.3f} | {g_elements / m:.2f} | {m / raw:.2f} |" for op, m in medians.items()]
    write_lines(Path(args.out + ".md"), lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
