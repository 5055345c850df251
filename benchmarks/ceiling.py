"""A ceiling for FW-soft on mini-TA20: the best point of its constraint set found the long way.

Layer-wise coefficients over conv{theta_0, the 4 eval tasks' models} (one simplex per parameter
tensor, the set FW-soft's coefficients live in, restricted to the relevant models), trained by
projected Adam on minibatches from the **full** train splits (cross-entropy through FusionBench's
zero-shot heads, as FW's objective), then scored on the test splits. FW-soft sees 100 train samples
per task and every model of the pool; this run knows which models are relevant and sees all the
data, so its gain over zero-shot bounds what the constraint set offers.

``--models all`` uses every model of the pool as a point of the simplex (the set FW-soft's gap is
measured over; the objective still covers the 4 eval tasks only).

    python benchmarks/ceiling.py [--models relevant|all] [--steps 2000] [--batch-per-task 32] [--lr 0.01]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.func import functional_call
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion_bench.dataset import CLIPDataset  # noqa: E402

from fusion_bench_fw import FWSoft  # noqa: E402
from fusion_bench_fw.families.clip_vision import CLIPVisionFamily  # noqa: E402
from fusion_bench_fw.frank_wolfe.params import combine  # noqa: E402
from fusion_bench_fw.frank_wolfe.simplex import project_onto_simplex  # noqa: E402
from fusion_bench_fw.mini.pools import MiniCLIPVisionModelPool  # noqa: E402
from harness.machine import commit_of, describe  # noqa: E402
from harness.report import write_json  # noqa: E402


def stacked(dataset, indices):
    items = [dataset[i] for i in indices]
    return torch.stack([x for x, _ in items]), torch.as_tensor([y for _, y in items])


@torch.no_grad()
def accuracy(model, params, heads, task, dataset, batch=256):
    correct = 0
    for start in range(0, len(dataset), batch):
        images, labels = stacked(dataset, range(start, min(start + batch, len(dataset))))
        correct += int((heads(lambda x: functional_call(model, params, (x,)), images, task).argmax(-1) == labels).sum())
    return correct / len(dataset)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-per-task", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", choices=("relevant", "all"), default="relevant")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/convergence/ceiling_<models>.json")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "benchmarks" / "results" / "convergence" / f"ceiling_{args.models}.json")
    torch.manual_seed(args.seed)

    pool = MiniCLIPVisionModelPool(variant="ta20", num_irrelevant=0 if args.models == "relevant" else None)
    tasks = list(MiniCLIPVisionModelPool(variant="ta20", num_irrelevant=0).model_names)  # the eval tasks
    models = list(pool.model_names)
    # FusionBench's zero-shot heads and logits, as FW's objective uses them (the CLIP family's)
    helper = CLIPVisionFamily(pool, FWSoft().fabric).heads
    helper.setup_zero_shot_classification_head(task_names=tasks)
    model = pool.load_pretrained_model().requires_grad_(False).eval()
    names = [n for n, _ in model.named_parameters()]
    points = [{n: p.detach().clone() for n, p in model.named_parameters()}]
    points += [{n: p.detach().clone() for n, p in pool.load_model(m).named_parameters()} for m in models]
    train = {t: CLIPDataset(pool.load_train_dataset(t), helper.clip_processor) for t in tasks}
    test = {t: CLIPDataset(pool.load_test_dataset(t), helper.clip_processor) for t in tasks}

    lam = torch.zeros(len(names), len(points), dtype=torch.float64)
    lam[:, 0] = 1.0
    zero_shot = {t: accuracy(model, combine(points, lam, names), helper.compute_logits, t, test[t]) for t in tasks}
    lam = torch.full_like(lam, 1.0 / len(points)).requires_grad_(True)
    optimizer = torch.optim.Adam([lam], lr=args.lr)
    started = time.perf_counter()
    losses = []
    for step in range(args.steps):
        theta = combine(points, lam.detach(), names)
        leaves = {n: t.requires_grad_(True) for n, t in theta.items()}
        loss = 0.0
        for t in tasks:
            images, labels = stacked(train[t], torch.randint(len(train[t]), (args.batch_per_task,)).tolist())
            loss = loss + F.cross_entropy(helper.compute_logits(lambda x: functional_call(model, leaves, (x,)), images, t), labels) / len(tasks)
        loss.backward()
        losses.append(float(loss))
        lam.grad = torch.stack([torch.stack([(leaves[n].grad * p[n]).sum().double() for p in points]) for n in names])
        optimizer.step()
        with torch.no_grad():
            lam.copy_(project_onto_simplex(lam))
        if step % 200 == 0:
            print(f"step {step}: loss {sum(losses[-50:]) / len(losses[-50:]):.4f}", flush=True)
    final = combine(points, lam.detach(), names)
    merged = {t: accuracy(model, final, helper.compute_logits, t, test[t]) for t in tasks}
    result = {
        "commit": commit_of(ROOT), "command": "python " + " ".join(sys.argv), "machine": describe(),
        "seconds": round(time.perf_counter() - started, 1), "tasks": tasks,
        "zero_shot": {t: round(100 * a, 2) for t, a in zero_shot.items()},
        "ceiling": {t: round(100 * a, 2) for t, a in merged.items()},
        "zero_shot_avg": round(100 * sum(zero_shot.values()) / len(tasks), 2),
        "ceiling_avg": round(100 * sum(merged.values()) / len(tasks), 2),
        "final_train_loss_last50": sum(losses[-50:]) / len(losses[-50:]),
        "models": args.models,
        "mean_weights": dict(zip(["_pretrained_", *models], [round(float(w), 4) for w in lam.detach().mean(0)])),
    }
    write_json(Path(args.out), result)
    print(json.dumps({k: result[k] for k in ("zero_shot_avg", "ceiling_avg", "seconds", "mean_weights")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
