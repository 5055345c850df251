"""Build one mini T5 GLUE pool into a directory: datasets, tokenizer, base T5, full and LoRA fine-tunes, card, manifest.

Everything is a function of (variant, seed); training runs single-threaded (fine-tunes in parallel
processes), as for the other mini pools. The tasks' rows are mini GLUE's (same generator, same
seed), kept with their GLUE columns and written as text-to-text pairs (``templates.text_pair``) and
tokens in the layout of FusionBench's flan-T5 GLUE loader: ``input_ids``/``attention_mask`` padded to
``max_length``, ``labels`` padded with -100. ``ensure_t5_built`` publishes a build atomically into the
shared mini-pool cache (``glue-t5-<variant>-v<version>-seed<seed>``) and reuses a finished one.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Dict

from ..families.causal_lm import IGNORE
from ..mini.finetune_jobs import one_thread, run_jobs
from ..mini_glue.tasks import pretraining_corpus, write_datasets
from ..mini_llm.build import derived_seed, ensure_text_pool_built, save_manifest_and_card
from ..mini_llm.manifest import LLMManifest as TextPoolManifest
from .templates import text_pair
from .variants import BUILDER_VERSION, T5Variant, get_variant

log = logging.getLogger(__name__)


def tokenize_split(raw_path: str, out_path: Path, task: str, tokenizer, variant: T5Variant) -> None:
    """Add the text-to-text columns and their tokens to one split; a row too long for the variant is refused."""
    from datasets import load_from_disk

    dataset = load_from_disk(raw_path)

    def encode(row):
        source, target = text_pair(task, row)
        inputs, labels = tokenizer(source)["input_ids"], tokenizer(target)["input_ids"]
        if len(inputs) > variant.max_length or len(labels) > variant.max_target_length:
            raise ValueError(f"mini T5 task {task}: a row has {len(inputs)} input / {len(labels)} target tokens, over the variant's "
                             f"max_length={variant.max_length} / max_target_length={variant.max_target_length}; raise them")
        pad = variant.max_length - len(inputs)
        return {"input_text": source, "target_text": target, "input_ids": inputs + [tokenizer.pad_token_id] * pad,
                "attention_mask": [1] * len(inputs) + [0] * pad, "labels": labels + [IGNORE] * (variant.max_target_length - len(labels))}

    dataset.map(encode).save_to_disk(str(out_path))


def build_t5_pool(variant: T5Variant, seed: int, out: Path) -> None:
    from datasets import load_from_disk

    from .card import measure_card, write_card
    from .tokenizer import build_t5_tokenizer
    from .training import T5FinetuneJob, new_t5, pretrain, run_t5_job

    started = time.perf_counter()
    out.mkdir(parents=True)
    with one_thread():
        raw = write_datasets(out / "raw", variant.tasks, variant.n_train, variant.n_test, seed)
        corpus = pretraining_corpus(variant.pretrain_lines, derived_seed(seed, "corpus"))
        texts = [" ".join(text_pair(t, row)) for t in variant.tasks for row in load_from_disk(raw[t]["train"])]
        tokenizer = build_t5_tokenizer(corpus + texts, out / "tokenizer", variant.vocab_size)
        datasets: Dict[str, Dict[str, str]] = {}
        for task in variant.tasks:
            datasets[task] = {}
            for split, path in raw[task].items():
                tokenize_split(path, out / "data" / task / split, task, tokenizer, variant)
                datasets[task][split] = str(out / "data" / task / split)
        shutil.rmtree(out / "raw")  # the tokenized rows keep their GLUE columns
        model = new_t5(variant, tokenizer, derived_seed(seed, "init"))
        pretrain(model, tokenizer, corpus, variant, derived_seed(seed, "pretrain"))
        model.save_pretrained(out / "base")
        tokenizer.save_pretrained(out / "base")
        log.info("mini T5 GLUE %s: base model pretrained in %.0f s", variant.name, time.perf_counter() - started)
        jobs = []
        for task in variant.tasks:
            rows = load_from_disk(datasets[task]["train"]).select_columns(["input_ids", "attention_mask", "labels"]).to_list()
            for lora in (False, True):
                jobs.append(T5FinetuneJob(task, str(out / "base"), str(out / "tokenizer"), rows, variant, lora,
                                          derived_seed(seed, f"finetune/{task}/{'lora' if lora else 'full'}"),
                                          str(out / ("adapters" if lora else "models") / task)))
        run_jobs(jobs, worker=run_t5_job)
    rel = lambda p: str(Path(p).relative_to(out))  # noqa: E731
    manifest = TextPoolManifest(
        builder_version=BUILDER_VERSION, variant=variant.name, seed=seed, tasks=list(variant.tasks), eval_tasks=list(variant.eval_tasks),
        base_dir="base", tokenizer_dir="tokenizer", models={j.task: rel(j.out_dir) for j in jobs if not j.lora},
        adapters={j.task: rel(j.out_dir) for j in jobs if j.lora}, datasets={t: {s: rel(p) for s, p in d.items()} for t, d in datasets.items()},
    )
    card = save_manifest_and_card(out, manifest, variant, started, measure_card, write_card)
    log.info("mini T5 GLUE %s built in %.0f s", variant.name, card["build_seconds"])


def ensure_t5_built(variant: str = "ta8", seed: int = 0, cache_dir=None) -> Path:
    """The directory of a finished build of (variant, seed), building it first if needed."""
    spec = get_variant(variant)
    return ensure_text_pool_built("glue-t5", variant, seed, BUILDER_VERSION, cache_dir, lambda partial: build_t5_pool(spec, seed, partial))
