"""Build one mini GLUE pool into a directory: datasets, tokenizer, base GPT-2, fine-tuned classifiers, card, manifest.

Everything is a function of (variant, seed); training runs single-threaded (fine-tunes in parallel
processes), as for the other mini pools. Rows are stored tokenized beside their text (``input_ids``,
``attention_mask`` padded to ``variant.max_length``, ``label``, ``idx``), the layout FusionBench's GPT-2
GLUE loaders produce. ``ensure_glue_built`` publishes a build atomically into the shared mini-pool
cache (``glue-<variant>-v<version>-seed<seed>``) and reuses a finished one.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Dict

from ..mini.finetune_jobs import one_thread, run_jobs
from ..mini_llm.build import derived_seed, ensure_text_pool_built, save_manifest_and_card
from ..mini_llm.manifest import LLMManifest as TextPoolManifest
from .tasks import get_task, pretraining_corpus, write_datasets
from .variants import BUILDER_VERSION, GlueVariant, get_variant

log = logging.getLogger(__name__)


def load_tokenizer(path):
    """The tokenizer as FusionBench's GPT-2 GLUE pools load it (slow GPT2Tokenizer, padding = <|endoftext|>)."""
    from fusion_bench.modelpool.huggingface_gpt2_classification import load_gpt2_tokenizer

    return load_gpt2_tokenizer(str(path))


def tokenize_split(raw_path: str, out_path: Path, task: str, tokenizer, max_length: int) -> None:
    from datasets import load_from_disk

    columns = get_task(task).columns
    dataset = load_from_disk(raw_path)
    longest = max(len(ids) for ids in tokenizer(*[list(dataset[c]) for c in columns])["input_ids"])
    if longest > max_length:
        raise ValueError(f"mini GLUE task {task}: a row has {longest} tokens > max_length={max_length}; raise the variant's max_length")
    encode = lambda rows: tokenizer(*[rows[c] for c in columns], padding="max_length", max_length=max_length)  # noqa: E731
    dataset.map(encode, batched=True).save_to_disk(str(out_path))


def build_glue_pool(variant: GlueVariant, seed: int, out: Path) -> None:
    from datasets import load_from_disk

    from .card import measure_card, write_card
    from .tokenizer import build_gpt2_tokenizer
    from .training import GlueFinetuneJob, new_gpt2, pretrain, run_glue_job

    started = time.perf_counter()
    out.mkdir(parents=True)
    with one_thread():
        raw = write_datasets(out / "raw", variant.tasks, variant.n_train, variant.n_test, seed)
        corpus = pretraining_corpus(variant.pretrain_lines, derived_seed(seed, "corpus"))
        texts = [" ".join(row[c] for c in get_task(t).columns) for t in variant.tasks for row in load_from_disk(raw[t]["train"])]
        build_gpt2_tokenizer(corpus + texts, out / "tokenizer", variant.vocab_size)
        tokenizer = load_tokenizer(out / "tokenizer")
        datasets: Dict[str, Dict[str, str]] = {}
        for task in variant.tasks:
            datasets[task] = {}
            for split, path in raw[task].items():
                tokenize_split(path, out / "data" / task / split, task, tokenizer, variant.max_length)
                datasets[task][split] = str(out / "data" / task / split)
        shutil.rmtree(out / "raw")  # the tokenized rows keep their text columns
        model = new_gpt2(variant, tokenizer, derived_seed(seed, "init"))
        pretrain(model, tokenizer, corpus, variant, derived_seed(seed, "pretrain"))
        model.transformer.save_pretrained(out / "base")  # the backbone, as the hub's gpt2 holds it
        tokenizer.save_pretrained(out / "base")
        log.info("mini GLUE %s: base model pretrained in %.0f s", variant.name, time.perf_counter() - started)
        jobs = []
        for task in variant.tasks:
            train = load_from_disk(datasets[task]["train"]).select_columns(["input_ids", "attention_mask", "label"])
            jobs.append(GlueFinetuneJob(task, str(out / "base"), train.to_list(), list(get_task(task).label_names), tokenizer.pad_token_id,
                                        variant, derived_seed(seed, f"finetune/{task}"), str(out / "models" / task)))
        run_jobs(jobs, worker=run_glue_job)
    rel = lambda p: str(Path(p).relative_to(out))  # noqa: E731
    manifest = TextPoolManifest(
        builder_version=BUILDER_VERSION, variant=variant.name, seed=seed, tasks=list(variant.tasks), eval_tasks=list(variant.eval_tasks),
        base_dir="base", tokenizer_dir="tokenizer", models={j.task: rel(j.out_dir) for j in jobs}, adapters={},
        datasets={t: {s: rel(p) for s, p in d.items()} for t, d in datasets.items()},
    )
    card = save_manifest_and_card(out, manifest, variant, started, measure_card, write_card)
    log.info("mini GLUE %s built in %.0f s", variant.name, card["build_seconds"])


def ensure_glue_built(variant: str = "ta8", seed: int = 0, cache_dir=None) -> Path:
    """The directory of a finished build of (variant, seed), building it first if needed."""
    spec = get_variant(variant)
    return ensure_text_pool_built("glue", variant, seed, BUILDER_VERSION, cache_dir, lambda partial: build_glue_pool(spec, seed, partial))
