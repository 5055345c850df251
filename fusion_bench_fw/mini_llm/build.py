"""Build one mini LLM pool into a directory: datasets, tokenizer, base Llama, fine-tunes, card, manifest.

Everything is a function of (variant, seed); training runs single-threaded (fine-tunes in parallel
processes), as for mini-TA20. ``ensure_llm_built`` publishes a build atomically into the shared
mini-pool cache (``llm-<variant>-v<version>-seed<seed>``) and reuses a finished one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

from ..mini.cache import cache_root, is_complete_marker, publish_build
from ..mini.finetune_jobs import one_thread, run_jobs
from .manifest import LLMManifest
from .tasks import alias_prompt, get_task, pretraining_corpus, write_datasets
from .variants import BUILDER_VERSION, LLMVariant, get_variant

log = logging.getLogger(__name__)


def derived_seed(seed: int, label: str) -> int:
    """A 32-bit seed for one part of a build (corpus, init, one fine-tune), fixed by the build seed and the label."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{label}".encode()).digest()[:4], "little")


def build_llm_pool(variant: LLMVariant, seed: int, out: Path) -> None:
    from datasets import load_from_disk

    from .card import measure_card, write_card
    from .tokenizer import build_tokenizer
    from .training import LLMFinetuneJob, new_llama, pretrain, run_llm_job

    started = time.perf_counter()
    out.mkdir(parents=True)
    with one_thread():
        datasets = write_datasets(out / "data", variant.tasks, variant.n_train, variant.n_test, seed)
        train = {t: list(zip(*[load_from_disk(datasets[t]["train"])[c] for c in ("prompt", "response")])) for t in variant.tasks}
        corpus = pretraining_corpus(variant.pretrain_lines, derived_seed(seed, "corpus"))
        # a little of every pool task (train pairs only, never a test prompt), as web text holds a little of everything
        seen = [(alias_prompt(get_task(t), p) if variant.pretrain_alias else p) + r
                for t, pairs in train.items() for p, r in pairs[: variant.pretrain_task_pairs]]
        texts = corpus + [p + r for pairs in train.values() for p, r in pairs] + (seen if variant.pretrain_alias else [])
        tokenizer = build_tokenizer(texts, out / "tokenizer", variant.vocab_size)
        model = new_llama(variant, tokenizer, derived_seed(seed, "init"))
        pretrain(model, tokenizer, corpus + seen, variant, derived_seed(seed, "pretrain"))
        model.save_pretrained(out / "base")
        tokenizer.save_pretrained(out / "base")
        log.info("mini LLM %s: base model pretrained in %.0f s", variant.name, time.perf_counter() - started)
        jobs = [LLMFinetuneJob(task, str(out / "base"), str(out / "tokenizer"), train[task], variant, task in variant.lora_tasks,
                               derived_seed(seed, f"finetune/{task}"), str(out / ("adapters" if task in variant.lora_tasks else "models") / task))
                for task in variant.tasks]
        run_jobs(jobs, worker=run_llm_job)
    rel = lambda p: str(Path(p).relative_to(out))  # noqa: E731
    manifest = LLMManifest(
        builder_version=BUILDER_VERSION, variant=variant.name, seed=seed, tasks=list(variant.tasks), eval_tasks=list(variant.eval_tasks),
        base_dir="base", tokenizer_dir="tokenizer",
        models={j.task: rel(j.out_dir) for j in jobs if not j.lora}, adapters={j.task: rel(j.out_dir) for j in jobs if j.lora},
        datasets={t: {s: rel(p) for s, p in d.items()} for t, d in datasets.items()},
    )
    card = save_manifest_and_card(out, manifest, variant, started, measure_card, write_card)
    log.info("mini LLM %s built in %.0f s", variant.name, card["build_seconds"])


def save_manifest_and_card(out: Path, manifest: LLMManifest, variant, started: float, measure_card, write_card) -> dict:
    """The last steps of a text-pool build (mini LLM, mini GLUE): the manifest, then the card measured
    on the built files, with the build's duration."""
    manifest.save(out)
    card = measure_card(LLMManifest.load(out), variant)
    card["build_seconds"] = round(time.perf_counter() - started, 1)
    write_card(out, card)
    return card


def ensure_text_pool_built(kind: str, variant: str, seed: int, version: int, cache_dir, build: Callable[[Path], None]) -> Path:
    """The directory ``<kind>-<variant>-v<version>-seed<seed>`` of a finished text-pool build, written by
    ``build(partial_dir)`` first if needed: finished means its marker matches and every path of its
    manifest (an ``LLMManifest``, shared by the mini LLM and GLUE pools) exists."""
    marker = {"builder_version": version, "variant": f"{kind}-{variant}", "seed": seed}

    def complete(path: Path) -> bool:
        if not is_complete_marker(path, marker):
            return False
        try:
            return all(Path(p).exists() for p in LLMManifest.load(path).all_paths())
        except (OSError, ValueError, TypeError):
            return False

    return publish_build(cache_root(cache_dir), f"{kind}-{variant}-v{version}-seed{seed}", marker, complete, build)


def ensure_llm_built(variant: str = "ta16", seed: int = 0, cache_dir=None) -> Path:
    """The directory of a finished build of (variant, seed), building it first if needed."""
    spec = get_variant(variant)
    return ensure_text_pool_built("llm", variant, seed, BUILDER_VERSION, cache_dir, lambda partial: build_llm_pool(spec, seed, partial))
