"""How alike a mini CLIP pool's task vectors are, per parameter tensor (issue: mini-TA20 fidelity).

Real CLIP fine-tunes merge because their task vectors are small and nearly orthogonal. This script
measures, for every merged tensor, the mean pairwise cosine between the pool's task vectors and
their mean norm relative to the pretrained tensor, grouped by kind (weight matrices; biases and
LayerNorm parameters). With ``--weights`` (an AdaMerging ``merging_weights.pt`` of the same pool) it
also lists, per tensor, the sum of the learnt coefficients over the models.

    python benchmarks/task_vector_geometry.py [--variant ta20] [--builder-version 3] [--weights outputs/.../merging_weights.pt] [--out PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.cli import parser  # noqa: E402
from harness.machine import command_line, commit_of  # noqa: E402
from harness.report import table, write_json, write_lines  # noqa: E402


def kind_of(name: str) -> str:
    from fusion_bench_fw.mini.training import is_bias_or_norm

    return "bias / LayerNorm" if is_bias_or_norm(name) else "weight matrix"


def main():
    cli = parser(__doc__)
    cli.add_argument("--variant", default="ta20")
    cli.add_argument("--builder-version", type=int, default=None, help="default: the current builder")
    cli.add_argument("--weights", default=None, help="AdaMerging merging_weights.pt of the whole pool (rows: models in pool order)")
    cli.add_argument("--out", default=str(ROOT / "benchmarks/results/mini_fidelity/task_vector_geometry"))
    args = cli.parse_args()

    import torch

    from fusion_bench_fw.mini.pools import MiniCLIPVisionModelPool

    pool = MiniCLIPVisionModelPool(args.variant, builder_version=args.builder_version)
    base = pool.load_model("_pretrained_")
    names = [n for n, p in base.named_parameters() if p.requires_grad]  # AdaMerging's layer order
    theta0 = base.state_dict()
    taus = {m: {n: v - theta0[n] for n, v in pool.load_model(m).state_dict().items() if n in names} for m in pool.model_names}
    weights = torch.load(args.weights) if args.weights else None
    rows = []
    for index, name in enumerate(names):
        vectors = torch.stack([taus[m][name].flatten().double() for m in pool.model_names])
        unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-30)
        k = len(unit)
        cosine = float(((unit @ unit.T).sum() - k) / (k * k - k))
        relative = float(vectors.norm(dim=1).mean() / theta0[name].double().norm().clamp_min(1e-30))
        row = {"tensor": name, "kind": kind_of(name), "mean_pairwise_cosine": cosine, "relative_norm": relative}
        if weights is not None:
            row["adamerging_coefficient_sum"] = float(weights[:, index].sum())
        rows.append(row)
    summary = {}
    for kind in ("weight matrix", "bias / LayerNorm"):
        chosen = [r for r in rows if r["kind"] == kind]
        summary[kind] = {"tensors": len(chosen), "mean_pairwise_cosine": sum(r["mean_pairwise_cosine"] for r in chosen) / len(chosen),
                         "relative_norm": sum(r["relative_norm"] for r in chosen) / len(chosen)}
    command, commit = command_line("HF_HUB_OFFLINE=1"), commit_of()
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"experiment": "task_vector_geometry", "variant": args.variant, "models": list(pool.model_names),
                                          "command": command, "commit": commit, "summary": summary, "rows": rows})
    version = "" if args.builder_version is None else f", builder v{args.builder_version}"
    lines = [f"# Task-vector geometry of the mini pool {args.variant}{version} ({len(pool.model_names)} fine-tunes)", "",
             f"Command: `{command}` (commit {commit})", "",
             *table(["tensors", "count", "mean pairwise cosine of the task vectors", "mean norm / pretrained norm"],
                    [(k, v["tensors"], f"{v['mean_pairwise_cosine']:+.3f}", f"{v['relative_norm']:.3f}") for k, v in summary.items()]), ""]
    if weights is not None:
        by_sum = sorted(rows, key=lambda r: r["adamerging_coefficient_sum"])
        lines += [f"AdaMerging coefficients summed over the {len(pool.model_names)} models (start: {0.3 * len(pool.model_names):.1f}), the 5 lowest and 8 highest tensors:", "",
                  *table(["tensor", "coefficient sum", "mean pairwise cosine", "norm / pretrained"],
                         [(r["tensor"], f"{r['adamerging_coefficient_sum']:.2f}", f"{r['mean_pairwise_cosine']:+.3f}", f"{r['relative_norm']:.3f}") for r in by_sum[:5] + by_sum[-8:]]), ""]
    write_lines(out.with_suffix(".md"), lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
