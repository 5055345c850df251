"""One LMO pass, vertex-major vs block-major, against just reading the checkpoint files.

Creates ``--n`` random CLIP ViT-B/32 vision checkpoints (``save_pretrained`` format, ~350 MB each)
under ``--work-dir`` (reused across runs), reads them once so the page cache is warm, then times,
interleaved within each repeat: a raw sequential read of the n files (``readinto`` of 1 MiB chunks),
and ``score_vertices`` over ``PoolCheckpoints`` as the solver calls it for the inner-product score
(``with_norms=False``) with 1 gradient row (fw_hard) and 5 rows (fw_soft with 4 objective tasks),
once vertex-major and once block-major, both forced through ``score_vertices``'s ``order`` (by
default a single float32 row streams vertex-major, see ``choose_order`` in ``reading.py``).
Medians over repeats; ratios are to the raw read's median.

    python benchmarks/lmo_block_major.py --n 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIP_B32 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32)
CHECKPOINT_BYTES = 350_000_000


class ModelDirs:
    """The two things PoolCheckpoints reads of a FusionBench pool; the fast path never loads a model."""

    def __init__(self, models):
        self._models = models

    def load_model(self, name):
        raise RuntimeError(f"{name}: expected the safetensors path")


def make_checkpoints(work_dir: Path, n: int, dtype) -> list:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    free = shutil.disk_usage(work_dir).free
    missing = [i for i in range(n) if not (work_dir / f"ckpt_{i:02d}" / "model.safetensors").is_file()]
    if len(missing) * CHECKPOINT_BYTES * dtype.itemsize / 4 * 1.2 > free:
        raise SystemExit(f"{work_dir}: {free / 1e9:.1f} GB free, {len(missing)} checkpoints of 0.35 GB to write: use a smaller --n")
    config = CLIPVisionConfig(**CLIP_B32)
    for i in missing:
        torch.manual_seed(i)
        CLIPVisionModel(config).to(dtype).save_pretrained(str(work_dir / f"ckpt_{i:02d}"))
        print(f"wrote {work_dir / f'ckpt_{i:02d}'}", flush=True)
    return [work_dir / f"ckpt_{i:02d}" for i in range(n)]


def reset_peak_rss() -> bool:
    """Linux: restart the VmHWM (peak RSS) counter, so each operation's own peak can be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def raw_read(files) -> None:
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    for file in files:
        with open(file, "rb", buffering=0) as handle:
            while handle.readinto(view):
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="number of checkpoints")
    parser.add_argument("--work-dir", default="/tmp/lmo_bench", help="where the checkpoints are written (reused; one folder per dtype)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the checkpoints' dtype; theta and the gradient rows take it too, as when the engine merges in the stored dtype")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the machine may be shared)")
    parser.add_argument("--block-group", type=int, default=None, help="score_vertices block_group (default: the engine's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lmo_block_major"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from fusion_bench_fw.checkpoints import PoolCheckpoints
    from harness.machine import commit_of, describe, one_line
    from harness.report import write_json, write_lines
    from fusion_bench_fw.frank_wolfe.reading import BLOCK_GROUP, PassOrder, score_vertices
    from transformers import CLIPVisionConfig, CLIPVisionModel

    block_group = args.block_group or BLOCK_GROUP
    dtype = getattr(torch, args.dtype)
    work_dir = Path(args.work_dir) / ("" if args.dtype == "float32" else args.dtype)
    work_dir.mkdir(parents=True, exist_ok=True)
    dirs = make_checkpoints(work_dir, args.n, dtype)
    files = [d / "model.safetensors" for d in dirs]
    with torch.device("meta"):
        skeleton = CLIPVisionModel(CLIPVisionConfig(**CLIP_B32))
    shapes = {name: p.shape for name, p in skeleton.named_parameters()}
    names = list(shapes)
    generator = torch.Generator().manual_seed(0)

    def point(scale):
        return {b: (torch.randn(shape, generator=generator) * scale).to(dtype) for b, shape in shapes.items()}

    theta = point(1e-2)
    rows = {1: {"total": point(1e-3)}}
    rows[5] = {"total": rows[1]["total"], **{f"task:{t}": point(1e-3) for t in range(4)}}
    models = {d.name: str(d) for d in dirs}

    def lmo(block_major: bool, n_rows: int):
        source = PoolCheckpoints(ModelDirs(models), list(models), names, dtype=dtype)
        order = PassOrder.BLOCK_MAJOR if block_major else PassOrder.VERTEX_MAJOR
        scores = score_vertices(source, theta, rows[n_rows], names, with_norms=False, block_group=block_group, order=order)
        assert source.loads == len(models) and source.block_loads == (len(models) if block_major else 0)
        return scores

    # the two orders must agree before their times mean anything
    for n_rows in (1, 5):
        a, b = lmo(False, n_rows), lmo(True, n_rows)
        for key in rows[n_rows]:
            scale = a.grad_dots[key].abs().max()
            assert torch.allclose(a.grad_dots[key], b.grad_dots[key], rtol=0, atol=1e-5 * float(scale)), key

    ops = {
        "raw read": lambda: raw_read(files),
        "vertex-major, 1 row": lambda: lmo(False, 1),
        "block-major (forced), 1 row": lambda: lmo(True, 1),
        "vertex-major, 5 rows": lambda: lmo(False, 5),
        "block-major, 5 rows": lambda: lmo(True, 5),
    }
    times = {op: [] for op in ops}
    peak_rss_mb = {op: [] for op in ops}  # peak RSS during the operation minus RSS at its start
    raw_read(files)  # warm page cache
    for repeat in range(args.repeats):
        for op, run in ops.items():
            tracked = reset_peak_rss()
            before = rss_kib("VmRSS")
            start = time.perf_counter()
            run()
            times[op].append(time.perf_counter() - start)
            if tracked:
                peak_rss_mb[op].append((rss_kib("VmHWM") - before) / 1024)
            print(f"repeat {repeat} {op:28s} {times[op][-1]:.3f} s", flush=True)

    medians = {op: statistics.median(values) for op, values in times.items()}
    raw = medians["raw read"]
    command = "python benchmarks/lmo_block_major.py " + " ".join(sys.argv[1:])
    machine = describe()
    total_bytes = sum(f.stat().st_size for f in files)
    result = {
        "command": command,
        "commit": commit_of(ROOT),
        "machine": machine,
        "threads": args.threads,
        "dtype": args.dtype,
        "n": args.n,
        "block_group": block_group,
        "bytes_read": total_bytes,
        "seconds": times,
        "peak_rss_increase_mb": peak_rss_mb,
        "median_s": medians,
        "ratio_to_raw_read": {op: m / raw for op, m in medians.items()},
    }
    lines = [
        f"# LMO pass vs raw read, n={args.n} CLIP ViT-B/32 checkpoints in {args.dtype} (warm page cache)",
        "",
        f"Command: `{command}` at {result['commit']}  ",
        f"Machine: {one_line(machine)}; torch threads: {args.threads}; 1-minute load average at the end {os.getloadavg()[0]:.1f}.  ",
        f"{args.n} files, {total_bytes / 1e9:.2f} GB in all; {args.repeats} repeats, interleaved; block_group={block_group}; "
        f"`score_vertices(..., with_norms=False)` over `PoolCheckpoints`, random gradient rows. By default "
        f"`score_vertices` takes the block-major path for 5 rows, and for 1 row only in half precision.",
        "",
        f"Bytes the 5-row block-major pass must move from memory, relative to the raw read: the n checkpoints, "
        f"the 5 gradient rows once per group of at most {block_group} and theta once: "
        f"{(args.n + 5 * -(-args.n // block_group) + 1) / args.n:.2f}x, before any arithmetic (one core: no overlap).",
        "",
        "Peak RSS: the most the process's RSS rose above its level at the start of the operation (VmHWM reset "
        "through /proc/self/clear_refs; memory-mapped checkpoint pages count).",
        "",
        "| operation | median (s) | min..max (s) | / raw read | peak RSS rise (MB, max) |",
        "|---|---|---|---|---|",
    ]
    for op, values in times.items():
        rise = f"{max(peak_rss_mb[op]):.0f}" if peak_rss_mb[op] else "n/a"
        lines.append(f"| {op} | {medians[op]:.3f} | {min(values):.3f}..{max(values):.3f} | {medians[op] / raw:.2f} | {rise} |")
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    write_lines(out.with_suffix(".md"), lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
