"""Run the per-task fine-tunes, in parallel worker processes when the machine has the cores.

Why processes, each single-threaded: the fine-tunes are independent, and tiny models gain little
from intra-op threads while suffering badly when the machine is shared (two OpenMP threads on a
busy 2-core box ran 40x slower than one). One thread per job also makes every checkpoint a
function of the seed alone, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

import torch
from torch import Tensor

from .variants import Variant

if TYPE_CHECKING:  # training imports transformers; workers import it only when they run a job
    from .training import Anchor


@dataclass
class FinetuneJob:
    task: str
    clip_dir: str
    text_embeds: Tensor
    train_x: Tensor
    train_y: Tensor
    variant: Variant
    seed: int
    out_dir: str
    anchor: Optional[Anchor] = None  # generic images for the fine-tuning anchor (see training.finetune_vision)


def job_seed(seed: int, task: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{task}".encode()).digest()[:8], "little") >> 1


def scrub_denormals(module: torch.nn.Module) -> None:
    """Zero subnormal weights, so that code computing with the checkpoints never hits slow paths."""
    tiny = torch.finfo(torch.float32).tiny
    with torch.no_grad():
        for p in module.parameters():
            p.masked_fill_(p.abs() < tiny, 0.0)


@contextmanager
def torch_threads(n: int):
    """torch on exactly ``n`` intra-op threads for the block, restored after. Results depend on the
    thread count, not on the machine's cores, so a fixed count keeps builds reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_thread():
    """torch on one intra-op thread: builds and their fine-tunes run single-threaded (parallelism
    comes from worker processes)."""
    return torch_threads(1)


def run_job(job: FinetuneJob) -> str:
    """Fine-tune one task's vision tower and save it; runs in a worker or in-process."""
    from transformers import CLIPModel

    from .training import TaskTensors, ZeroShotHead, finetune_vision

    torch.set_flush_denormal(True)
    with one_thread():
        clip = CLIPModel.from_pretrained(job.clip_dir)
        head = ZeroShotHead(clip, job.text_embeds)
        task = TaskTensors(job.task, [], [], job.train_x, job.train_y, job.train_x[:0], job.train_y[:0])
        gen = torch.Generator().manual_seed(job_seed(job.seed, job.task))
        model = finetune_vision(clip, head, task, job.variant, gen, anchor=job.anchor)
        scrub_denormals(model)
        model.save_pretrained(job.out_dir)
    return job.task


def num_workers(n_jobs: int) -> int:
    return max(1, min(n_jobs, os.cpu_count() or 1, 4))


def run_jobs(jobs: List, on_done: Optional[Callable[[str], None]] = None, worker: Callable = run_job) -> None:
    """Run every job (``worker(job)`` returns its task; a module-level function, so a spawned process
    can import it), on a spawn-based process pool when more than one core is available."""
    workers = num_workers(len(jobs))
    if workers == 1:
        for job in jobs:
            worker(job)
            if on_done:
                on_done(job.task)
        return
    # spawn, not fork: forking a process whose torch/OpenMP threads are running can deadlock
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(worker, job) for job in jobs]
        for future in as_completed(futures):
            task = future.result()
            if on_done:
                on_done(task)
    for job in jobs:
        if not Path(job.out_dir).exists():
            raise RuntimeError(f"fine-tune of {job.task} produced no checkpoint")
