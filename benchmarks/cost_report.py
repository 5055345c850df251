"""Markdown and PNG of the cost experiments, rendered from their JSON alone.

Every sentence is computed from the file (settings, definitions, rows), so a re-run rewrites the
whole report. ``cost_methods.py`` and ``cost_lmo.py`` call ``render`` after measuring, then ``cost_summary``'s
``render_summaries``, which judges the hub stand-in runs of every variant together.
Without arguments this script re-renders every JSON under ``benchmarks/results/cost/`` it measures the
layout of (not ``cost_llm.py``'s or ``cost_openclip.py``'s: they render their own) and the summaries.

    .venv/bin/python benchmarks/cost_report.py [benchmarks/results/cost/methods_cpu_fp32.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import cli  # noqa: E402
from harness.machine import one_line  # noqa: E402
from harness.report import GB, cell, digits_for, fmt, median, pyplot, ratio, table, verdict, write_lines  # noqa: E402

ORDER = ("fw_hard", "fw_soft", "intree_fw_soft", "df_merge", "adamerging")
LABELS = {"fw_hard": "ours fw_hard (task-wise)", "fw_soft": "ours fw_soft", "intree_fw_soft": "in-tree fw_soft", "intree_fw_hard": "in-tree fw_hard",
          "adamerging": "FusionBench layer-wise AdaMerging", "df_merge": "ours df_merge (one BO step)"}
# The targets, recorded in a result file's settings when it is measured: peak RSS at the largest n /
# at the smallest, fw_soft's iteration / in-tree fw_soft's (at the largest n, CPU), bf16-sharded
# peak RSS / fp32's, LMO pass / raw read, and every checkpoint of our runs on the streaming reader.
TARGETS = {"rss_ratio": 1.1, "df_merge_rss_ratio": 1.15, "soft_over_intree": 0.67, "soft_over_intree_at": "largest n", "bf16_over_fp32_rss": 0.6, "lmo_over_read": 2.0,
           "streaming": "every checkpoint (n + 1 of n + 1)"}
# files without targets (the runs on _cost_pool.py's hand-made folders) are judged as they were then
EARLIER_TARGETS = {"rss_ratio": 1.25, "soft_over_intree": 1 / 3, "soft_over_intree_at": "every n", "lmo_over_read": 2.0}
STREAMING = "safetensors"


def targets_of(settings: Dict[str, Any]) -> Dict[str, Any]:
    return settings.get("targets") or EARLIER_TARGETS


def pool_text(settings: Dict[str, Any]) -> str:
    """Which pool a result file measured, from its settings."""
    pool = settings.get("pool")
    if not pool:
        return f"`benchmarks/_cost_pool.py` (hand-made local folders, since removed), fine-tuned checkpoints of {settings['bytes_per_checkpoint'] / 1e6:.0f} MB; pool n = the first n"
    layout = "1 safetensors file" if pool["shards"] == 1 else f"{pool['shards']} safetensors shards + index"
    return (f"`{pool['config']}` (the config users run) on the hub stand-in (`benchmarks/_standin_pool.py`, variant `{pool['variant']}`: "
            f"{pool['dtype']}, {layout} per model, {'tiny towers' if pool['tiny'] else 'CLIP ViT-B/32 shapes'}, {pool['rows']} rows per dataset split; "
            f"fine-tuned checkpoints of {pool['bytes_per_checkpoint'] / 1e6:.3g} MB); pool n = the config's first n fine-tunes "
            f"({', '.join(pool['tasks'][:4])}, ...), objective tasks the first {len(pool['objective_tasks'])}")


def run_tag(settings: Dict[str, Any]) -> str:
    """The stand-in variant, and our methods' compute dtype and fw_soft settings when set: 'bf16_2shards',
    'bf16_2shards, compute bfloat16', 'fp32, fw_soft inner_init=fw_step line_search_evals=4'."""
    soft = [f"{key}={settings[f'soft_{key}']}" for key in ("inner_init", "line_search_evals", "fw_step_search") if settings.get(f"soft_{key}") is not None]
    return settings["pool"]["variant"] + (f", compute {settings['compute_dtype']}" if settings.get("compute_dtype") else "") + (f", fw_soft {' '.join(soft)}" if soft else "")


def readers_ok(row: Dict[str, Any]) -> bool:
    """Our run read all n + 1 checkpoints (the pretrained one and n fine-tunes) with the streaming reader."""
    return row.get("readers") == {STREAMING: row["n"] + 1, "pool_loader": 0}


def readers_cells(rows: List[Dict[str, Any]], methods=("fw_hard", "fw_soft")) -> str:
    parts = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        by_n = {}
        for r in mine:
            counts = r.get("readers") or {}
            by_n.setdefault(r["n"], []).append(f"{counts.get(STREAMING, 0)}/{sum(counts.values())}" if counts else "none")
        if by_n:
            parts.append(f"{method} " + ", ".join(f"n={n}: {' '.join(sorted(set(v)))}" + (f" ×{len(v)}" if len(v) > 1 else "") for n, v in sorted(by_n.items())))
    return "; ".join(parts) or "–"


# result files in benchmarks/results/cost/ that another script measures and renders
RENDERED_BY = {"cost_llm": "benchmarks/cost_llm.py", "cost_openclip": "benchmarks/cost_openclip.py"}


def experiment_of(json_path: Path) -> str:
    return json.loads(Path(json_path).read_text())["experiment"]


def render(json_path: Path) -> List[Path]:
    """Write the .md and .png beside ``json_path``; the paths written."""
    json_path = Path(json_path)
    payload = json.loads(json_path.read_text())
    if payload["experiment"] in RENDERED_BY:
        raise SystemExit(f"{json_path}: a {payload['experiment']} result; render it with "
                         f"`.venv/bin/python {RENDERED_BY[payload['experiment']]} --report-only --out {json_path}`")
    lines, plot = (methods_report if payload["experiment"] == "cost_methods" else lmo_report)(payload, json_path)
    md, png = json_path.with_suffix(".md"), json_path.with_suffix(".png")
    write_lines(md, lines)
    plot(png)
    return [md, png]


def label(method: str, accelerator: str) -> str:
    suffix = " (patched to CPU)" if accelerator == "cpu" else f" (native {accelerator.upper()})"
    return LABELS[method] + (suffix if method.startswith("intree") else "")


def provenance(payload: Dict[str, Any], rows: List[Dict[str, Any]]) -> List[str]:
    """Commands (with their commits and row counts), then the machine."""
    lines = []
    invocations = {i["command"]: i for i in payload.get("invocations", [])}
    for command in dict.fromkeys(r["command"] for r in rows):
        mine = [r for r in rows if r["command"] == command]
        planned = invocations.get(command, {})
        state = "" if planned.get("finished", True) else f"; unfinished: {len(mine)} of {planned.get('planned_rows')} planned rows"
        lines.append(f"- `{command}` at commit {', '.join(dict.fromkeys(r['commit'] for r in mine))}: {len(mine)} rows{state}")
    converted = [f"Converted from {payload['converted_from']}.", ""] if payload.get("converted_from") else []
    return ["Measured by:", "", *lines, "", *converted, f"Machine: {one_line(payload['machine'])}.", ""]


def definitions(payload: Dict[str, Any]) -> List[str]:
    return [f"- `{key}`: {text}" for key, text in payload.get("definitions", {}).items()]


# ------------------------------------------------------------------------------------------------
# methods vs n
# ------------------------------------------------------------------------------------------------
def methods_report(payload: Dict[str, Any], json_path: Path):
    s, rows = payload["settings"], payload["rows"]
    sizes, accelerator = s["sizes"], s["accelerator"]
    ok = [r for r in rows if r["status"] == "ok"]
    methods = [m for m in ORDER if any(r["method"] == m for r in rows)]

    def values(method, n, key, scale=1.0):
        return [r[key] / scale for r in ok if r["method"] == method and r["n"] == n and r.get(key) is not None]

    def med(method, n, key, scale=1.0):
        return median(values(method, n, key, scale))

    device = payload["machine"].get("gpu", "GPU") if accelerator != "cpu" else "CPU"
    title = f"Cost on the real path (hub stand-in, `{s['pool']['variant']}`)" if s.get("pool") else "Cost at real scale"
    lines = [f"# {title}: one merging iteration vs n ({device})", "", f"Generated by `benchmarks/cost_report.py` from `{json_path.name}`.", ""]
    lines += provenance(payload, rows)
    lo, hi = min(sizes), max(sizes)
    lines += ["## Setup", "",
              f"- Pool: {pool_text(s)}; n = {', '.join(map(str, sizes))}.",
              f"- Objective: {s['objective_tasks']} tasks × {s['samples_per_task']} samples = {s['objective_tasks'] * s['samples_per_task']} samples per "
              f"gradient for every method; one iteration (`max_iters=1`, AdaMerging `max_steps=1`); fw_soft `inner_steps` = in-tree `ada_iters` = "
              f"{s['inner_steps']}; fw_hard task-wise, {s['line_search_evals']} line-search evaluations"
              + (f"; ours with `compute_dtype: {s.get('compute_dtype') or 'null'}`" if s.get("pool") else "")
              + (f", `batch_size: {s['batch_size']}` (samples per forward pass; several tasks' batches share one)." if s.get("batch_size") else "."),
              f"- Accelerator: {accelerator}; {s['threads']} torch thread(s) per child; every row a fresh child process. Cells: median [min–max] ×runs.",
              *definitions(payload), ""]

    targets = []
    goal = targets_of(s)
    if any(r.get("readers") for r in ok):
        ours = [r for r in ok if r["method"] in ("fw_hard", "fw_soft")]
        targets.append(("every run of ours reads all n+1 checkpoints with the streaming safetensors reader", readers_cells(ours), "PASS" if all(map(readers_ok, ours)) else "MISS"))
    if len(sizes) > 1:
        for method in ("fw_hard", "fw_soft", "df_merge"):
            a, b = med(method, lo, "peak_rss_bytes", GB), med(method, hi, "peak_rss_bytes", GB)
            limit = goal.get(f"{method}_rss_ratio", goal["rss_ratio"])
            if a and b:
                targets.append((f"{method}: peak RSS at n={hi} <= {limit:g} x peak RSS at n={lo}", f"{b:.2f} GiB / {a:.2f} GiB = {b / a:.3f}",
                                verdict(b / a, limit)))
    time_kinds = {"iteration_s": "wall time of one iteration", "run_s": "wall time of the whole run() (setup + 1 iteration)"}
    if accelerator == "cpu":  # on a GPU the host's CPU time says little about the work
        time_kinds.update(iteration_cpu_s="CPU time of one iteration", run_cpu_s="CPU time of the whole run()")
    at_largest = goal["soft_over_intree_at"] == "largest n"
    for key, text in time_kinds.items():
        ratios = {n: ratio(med("fw_soft", n, key), med("intree_fw_soft", n, key)) for n in ([hi] if at_largest else sizes)}
        ratios = {n: r for n, r in ratios.items() if r is not None}
        if ratios:
            where = f"at n={hi}" if at_largest else "every n"
            targets.append((f"fw_soft {text} <= {goal['soft_over_intree']:.2g} x in-tree fw_soft's, {where}", ", ".join(f"n={n}: {r:.2f}" for n, r in ratios.items()),
                            verdict(max(ratios.values()), goal["soft_over_intree"])))
    if targets:
        lines += ["## Targets", "", *table(("target", "measured", "verdict"), [(t, m, f"**{v}**") for t, m, v in targets]), ""]

    reading = []
    for method in methods:
        a, b = med(method, lo, "peak_rss_bytes", GB), med(method, hi, "peak_rss_bytes", GB)
        if a and b and hi > lo:
            reading.append(f"- Memory, {label(method, accelerator)}: {a:.2f} GiB at n={lo} → {b:.2f} GiB at n={hi}, "
                           f"{(b - a) / (hi - lo) * 1024:+.0f} MiB per extra model (one checkpoint: {s['bytes_per_checkpoint'] / 2**20:.3g} MiB).")
    if reading:
        lines += ["## Reading", "", *reading, ""]

    def failed_cell(method, n):
        bad = [r for r in rows if r["method"] == method and r["n"] == n and r["status"] != "ok"]
        if not bad:
            return "–"
        peak = max((r.get("peak_rss_bytes") or 0) for r in bad) / GB
        return f"**{bad[0]['status']}**" + (f" (≥{peak:.1f})" if peak else "")

    def by_n(title, key, scale=1.0, digits=None, with_ratio=False, last=None):
        if not any(r.get(key) is not None for r in ok):
            return []
        digits = digits if digits is not None else digits_for(med(m, n, key) for m in methods for n in sizes)
        header = ["method", *(f"n={n}" for n in sizes)] + ([last] if last else [])
        body = []
        for method in methods:
            cells = [cell(values(method, n, key, scale), digits) if values(method, n, key) else failed_cell(method, n) for n in sizes]
            if last:
                cells.append(fmt(ratio(med(method, hi, key, scale), med(method, lo, key, scale)), 2))
            body.append([label(method, accelerator), *cells])
        for ours in ("fw_soft", "fw_hard"):
            if with_ratio and {ours, "intree_fw_soft"} <= set(methods):
                body.append([f"*ratio {ours} / in-tree fw_soft*", *(fmt(ratio(med(ours, n, key), med("intree_fw_soft", n, key)), 2) for n in sizes)])
        return [f"## {title}", "", *table(header, body), ""]

    lines += by_n("Peak RSS (GiB) vs n", "peak_rss_bytes", GB, 2, last=f"n={hi} / n={lo}" if hi > lo else None)
    lines += by_n("Peak GPU memory (GiB) vs n", "cuda_peak_bytes", GB, 2)
    if any(r.get("peak_rss_iteration_bytes") for r in ok):
        split = [[label(m, accelerator), *(f"{fmt(med(m, n, 'peak_rss_setup_bytes', GB), 2)} / {fmt(med(m, n, 'peak_rss_iteration_bytes', GB), 2)}"
                                           if values(m, n, "peak_rss_bytes") else "–" for n in sizes)] for m in methods]
        lines += ["## Peak RSS (GiB) before / during the iteration", "", *table(["method", *(f"n={n}" for n in sizes)], split), ""]
    time_digits = digits_for(med(m, n, "iteration_s") for m in methods for n in sizes)
    lines += by_n("Wall time of one iteration (s) vs n", "iteration_s", with_ratio=True)
    lines += by_n("Wall time of the whole run() (s) vs n", "run_s", with_ratio=True)
    if accelerator == "cpu":
        lines += by_n("CPU time (user+sys) of one iteration (s) vs n", "iteration_cpu_s", with_ratio=True)
        lines += by_n("CPU time (user+sys) of the whole run() (s) vs n", "run_cpu_s", with_ratio=True)

    where = []
    for method in methods:
        for n in sizes:
            mine = [r for r in ok if r["method"] == method and r["n"] == n]
            parts = []
            for group, title in (("timers_s", ""), ("stages_s", "stages: ")):
                keys = list(dict.fromkeys(k for r in mine for k in r.get(group, {})))
                if keys:
                    parts.append(title + ", ".join(f"{k} {median(r[group].get(k) for r in mine if group in r):.{time_digits}f}" for k in keys))
            if parts:
                where.append((label(method, accelerator), n, "; ".join(parts)))
    if where:
        lines += ["## Where the time goes (median s; see `timers_s`, `stages_s` above)", "", *table(("method", "n", "timers"), where), ""]

    intree_hard = [r for r in rows if r["method"] == "intree_fw_hard"]
    if intree_hard:
        lines += ["## In-tree fw_hard", ""]
        for r in intree_hard:
            frames = [ln.strip() for ln in (r.get("traceback_tail") or "").splitlines() if ln.strip().startswith("File ")][-3:]
            lines.append(f"- variant `{r.get('variant')}` (n={r['n']}): **{r['status']}**"
                         + (f" — {r.get('error', '')[:400]}" if r["status"] != "ok" else f" — peak {r['peak_rss_bytes'] / GB:.2f} GiB, run {fmt(r.get('run_s'))} s")
                         + (" — last frames: " + " ← ".join(f"`{f}`" for f in reversed(frames)) if frames else ""))
        lines.append("")
    failures = [r for r in rows if r["status"] != "ok" and r["method"] != "intree_fw_hard"]
    if failures:
        lines += ["## Failures, OOMs and skips", ""] + [f"- {r['method']} n={r['n']} repeat {r['repeat']}: **{r['status']}** — {r.get('error', '')[:300]}" for r in failures] + [""]

    def plot(png: Path) -> None:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        for method, marker in zip(methods, "os^D"):
            for ax, key, scale in ((axes[0], "peak_rss_bytes", GB), (axes[1], "iteration_s", 1.0)):
                xs = [n for n in sizes if values(method, n, key)]
                ax.plot(xs, [med(method, n, key, scale) for n in xs], marker=marker, label=label(method, accelerator))
        for r in rows:
            if r["status"] in ("killed", "crashed", "timeout") and r.get("peak_rss_bytes"):
                axes[0].scatter([r["n"]], [r["peak_rss_bytes"] / GB], marker="x", color="red", zorder=5)
                axes[0].annotate(r["status"], (r["n"], r["peak_rss_bytes"] / GB), textcoords="offset points", xytext=(4, 4), fontsize=8, color="red")
        for ax, ylabel, title in ((axes[0], "peak RSS of the run (GiB)", "Peak memory vs n"), (axes[1], "seconds", "Wall time of one iteration / step (median)")):
            ax.set(xlabel="models in the pool (n)", ylabel=ylabel, title=title, xticks=sizes)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{one_line(payload['machine']).split(';')[0]}; {accelerator}, {s['threads']} thread(s), "
                     f"{s['bytes_per_checkpoint'] / 1e6:.3g} MB/checkpoint" + (f" (hub stand-in {s['pool']['variant']})" if s.get("pool") else "")
                     + f"; commits {', '.join(dict.fromkeys(r['commit'] for r in rows))}", fontsize=9)
        fig.tight_layout()
        fig.savefig(str(png), dpi=110)
        plt.close(fig)

    return lines, plot


# ------------------------------------------------------------------------------------------------
# LMO vs raw read
# ------------------------------------------------------------------------------------------------
LMO_OPS = {"lmo_1row": "1 gradient row = fw_hard", "lmo_5rows": "5 gradient rows: total + 4 task rows",
           "lmo_soft": "fw_soft with 4 tasks: 4 task rows read, total derived"}


def lmo_summary(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (n, cache): every op's seconds and median, the read baseline (the faster read median), ratios."""
    out = []
    for n in sorted({r["n"] for r in rows}):
        for cache in ("cold", "warm"):
            entry: Dict[str, Any] = {"n": n, "cache": cache}
            for op in ("read_bytes", "read_mmap", *LMO_OPS):
                entry[op] = [r["seconds"] for r in rows if (r["n"], r["cache"], r["op"]) == (n, cache, op)]
            entry["read_s"] = min(x for x in (median(entry["read_bytes"]), median(entry["read_mmap"])) if x is not None)
            for op in LMO_OPS:
                entry[f"{op}/read"] = ratio(median(entry[op]), entry["read_s"])
            entry["resident"] = max((r["resident_before"] for r in rows if (r["n"], r["cache"]) == (n, cache) and r.get("resident_before") is not None), default=None)
            out.append(entry)
    return out


def lmo_report(payload: Dict[str, Any], json_path: Path):
    s, rows = payload["settings"], payload["rows"]
    summary = lmo_summary(rows)
    limit = targets_of(s)["lmo_over_read"]
    lines = [f"# One LMO pass vs just reading the checkpoints (n = {', '.join(map(str, s['sizes']))})", "",
             f"Generated by `benchmarks/cost_report.py` from `{json_path.name}`.", ""]
    lines += provenance(payload, rows + payload.get("per_vertex", []))
    dtypes = s.get("dtypes")
    lines += ["## Setup", "", f"- Pool: {pool_text(s)}.",
              *([f"- Checkpoints stored as {dtypes['stored']}; theta, gradient rows and streamed checkpoints in {dtypes['compute']} (the solver's dtype with "
                 f"`compute_dtype: {s.get('compute_dtype') or 'null'}`)."] if dtypes else []),
              f"- {s['threads']} torch thread(s); "
              f"{s['repeats']} repeats ({s['soft_repeats']} of the multi-row passes), interleaved; engine block group {s['block_group']}. Seconds.",
              *definitions(payload), ""]
    targets = [(f"LMO pass over n={e['n']} checkpoints ({text}, {e['cache']} page cache) <= {limit:g} x raw read of the same files (faster of read/mmap)",
                f"{median(e[op]):.2f} s / {e['read_s']:.2f} s = {e[op + '/read']:.2f}", f"**{verdict(e[op + '/read'], limit)}**")
               for e in summary if any(e[op] for op in LMO_OPS) for op, text in LMO_OPS.items() if e[op]]
    lines += ["## Targets", "", *table(("target", "measured", "verdict"), targets), ""]
    header = ("n", "cache", "read (readinto)", "read (mmap + sum)", "LMO 1 row", "LMO 5 rows", "FW-soft pass (4 rows + derived total)", "LMO1 / read", "LMO5 / read",
              "FW-soft / read", "resident before (max)")
    body = [(e["n"], e["cache"], *(cell(e[op], 2) for op in ("read_bytes", "read_mmap", *LMO_OPS)), *(fmt(e[f"{op}/read"], 2) for op in LMO_OPS), fmt(e["resident"], 3))
            for e in summary]
    lines += ["## LMO pass and raw reads (s)", "", *table(header, body), ""]
    group = s["block_group"]
    floors = "; ".join(f"n={n}: {(n + -(-n // group) * 4 + 1) / n:.2f}x with 4 rows, {(n + -(-n // group) * 5 + 1) / n:.2f}x with 5" for n in s["sizes"])
    lines += [f"Memory-traffic floor of a block-major pass (each group of up to {group} checkpoints reads its checkpoints once plus every row and theta "
              f"once: (n + groups × rows + 1) / n of the raw read): {floors}.", ""]
    if payload.get("per_vertex"):
        lines += ["## Per-vertex arithmetic, checkpoint in memory (s / checkpoint)", "",
                  *table(("computation", "s / checkpoint"), [(r["computation"], f"{r['seconds']:.2f}") for r in payload["per_vertex"]]), ""]
    lines += in_run_lmo(methods_beside(json_path), summary)

    def plot(png: Path) -> None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(8, 4))
        groups = [f"n={e['n']} {e['cache']}" for e in summary]
        width = 0.8 / len(LMO_OPS)
        for i, (op, text) in enumerate(LMO_OPS.items()):
            ax.bar([g + i * width for g in range(len(summary))], [e[op + "/read"] or 0 for e in summary], width, label=text)
        ax.axhline(limit, color="grey", linestyle="--", linewidth=1, label=f"target: {limit:g}x the read")
        ax.set(xticks=[g + width for g in range(len(summary))], xticklabels=groups, ylabel="LMO pass / raw read", title="One LMO pass vs raw read of the same files")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(str(png), dpi=110)
        plt.close(fig)

    return lines, plot


def methods_beside(lmo_json: Path) -> Path:
    """The CPU method runs of the same pool: lmo<rest>.json -> methods_cpu<rest>.json (lmo_fp32.json -> methods_cpu_fp32.json)."""
    return lmo_json.with_name("methods_cpu" + lmo_json.name[len("lmo"):]) if lmo_json.name.startswith("lmo") else lmo_json.with_name("methods_cpu.json")


def in_run_lmo(methods_json: Path, summary: List[Dict[str, Any]]) -> List[str]:
    """The LMO timer of the CPU method runs, per vertex, against the raw read per checkpoint."""
    if not methods_json.exists():
        return []
    rows = [r for r in json.loads(methods_json.read_text())["rows"] if r["status"] == "ok" and r["method"] in ("fw_hard", "fw_soft")]
    cold = median(e["read_s"] / e["n"] for e in summary if e["cache"] == "cold")
    warm = median(e["read_s"] / e["n"] for e in summary if e["cache"] == "warm")
    body = []
    for method in ("fw_hard", "fw_soft"):
        for n in sorted({r["n"] for r in rows if r["method"] == method}):
            mine = [r for r in rows if (r["method"], r["n"]) == (method, n)]
            seconds = median(r.get("timers_s", {}).get("lmo") for r in mine)
            vertices = mine[0].get("vertices")
            if seconds is None or not vertices:
                continue
            body.append((LABELS[method], n, vertices, f"{seconds:.1f}", f"{seconds / vertices:.2f}", fmt(ratio(seconds / vertices, cold), 1), fmt(ratio(seconds / vertices, warm), 1)))
    if not body:
        return []
    return [f"## The LMO pass inside the method runs (`{methods_json.name}`, timer `lmo`, real gradients)", "",
            f"Raw read per checkpoint (median over the sizes above of the read baseline / n): cold {fmt(cold, 2)} s, warm {fmt(warm, 2)} s.", "",
            *table(("method", "n", "vertices", "LMO pass (s)", "per vertex (s)", "per vertex / cold read", "per vertex / warm read"), body), ""]


def main(argv=None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("json", nargs="*", help="result files (default: every JSON under benchmarks/results/cost/, then the summaries)")
    args = parser.parse_args(argv)
    every = [p for p in sorted((HERE / "results" / "cost").glob("*.json")) if experiment_of(p) not in RENDERED_BY]
    for path in args.json or every:
        print("wrote", ", ".join(map(str, render(Path(path)))))
    from cost_summary import render_summaries  # it builds on this module's helpers

    for directory in dict.fromkeys(Path(p).parent for p in args.json) if args.json else [HERE / "results" / "cost"]:
        written = render_summaries(directory)
        if written:
            print("wrote", ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
