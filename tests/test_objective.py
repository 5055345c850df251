"""SampleObjective: the loss and gradients every solver reads, checked against plain autograd."""

import torch
from torch.func import functional_call

from fusion_bench_fw.objective import SampleObjective, TaskBatches


def _problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    names = [name for name, _ in model.named_parameters()]
    # task "a": two batches of 3 and 2 samples; task "b": one batch of 4
    data = [
        TaskBatches("a", [(torch.randn(3, 5), torch.randint(0, 3, (3,))), (torch.randn(2, 5), torch.randint(0, 3, (2,)))], num_samples=5),
        TaskBatches("b", [(torch.randn(4, 5), torch.randint(0, 3, (4,)))], num_samples=4),
    ]

    def batch_loss(params, task, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(functional_call(model, dict(params), (x,)), y, reduction="sum")

    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    return SampleObjective(names, data, batch_loss), params, data, batch_loss


def _reference(params, data, batch_loss, tasks):
    """Gradient of the mean over ``tasks`` of each task's mean sample loss, by one autograd call."""
    leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
    chosen = [d for d in data if d.task in tasks]
    loss = sum(sum(batch_loss(leaves, d.task, b) for b in d.batches) / d.num_samples for d in chosen) / len(chosen)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return float(loss.detach()), dict(zip(leaves, grads))


def test_total_and_per_task_gradients_match_autograd_and_do_not_alias():
    objective, params, data, batch_loss = _problem()
    loss, grad = _reference(params, data, batch_loss, {"a", "b"})
    plain = objective.loss_and_grad(params)
    assert abs(plain.loss - loss) < 1e-6
    for name in grad:
        torch.testing.assert_close(plain.grad[name], grad[name], rtol=1e-5, atol=1e-7)
    kept = {name: g.clone() for name, g in plain.grad.items()}

    split = objective.loss_and_grad(params, per_task=True)
    assert split.task_weights == {"a": 0.5, "b": 0.5}
    for task in ("a", "b"):
        _, own = _reference(params, data, batch_loss, {task})  # a task's row: its own mean loss's gradient
        for name in own:
            torch.testing.assert_close(split.task_grads[task][name], own[name], rtol=1e-5, atol=1e-7)
    assert split.grad is None  # left to be derived from the rows
    for name in grad:
        torch.testing.assert_close(split.total_grad()[name], grad[name], rtol=1e-5, atol=1e-7)
        # the rows are not the total's storage, and the earlier result was not overwritten
        assert split.total_grad()[name].data_ptr() not in {split.task_grads[t][name].data_ptr() for t in ("a", "b")}
        assert torch.equal(plain.grad[name], kept[name])
    assert objective.forward_passes == objective.backward_passes == 6


def test_batches_are_packed_first_fit_by_decreasing_size_up_to_the_pass_size():
    from fusion_bench_fw.objective import pack_batches

    data = [TaskBatches("a", [None] * 3, 36, sizes=[16, 16, 4]), TaskBatches("b", [None] * 2, 20, sizes=[16, 4]), TaskBatches("c", [None], 5, sizes=[5])]
    packs = pack_batches(data, 16)
    assert packs == [[(0, 0)], [(0, 1)], [(1, 0)], [(0, 2), (1, 1), (2, 0)]]  # 4 + 4 + 5 <= 16
    assert pack_batches(data, 40) == [[(0, 0), (0, 1), (2, 0)], [(0, 2), (1, 0), (1, 1)]]  # 16 + 16 + 5; 16 + 4 + 4
    assert pack_batches(data, None) == [[(0, 0)], [(0, 1)], [(0, 2)], [(1, 0)], [(1, 1)], [(2, 0)]]
    unknown = [TaskBatches("a", [None] * 2, 4)]  # no sizes: one batch per pass
    assert pack_batches(unknown, 64) == [[(0, 0)], [(0, 1)]]


def test_packed_passes_give_the_same_objective_and_gradient_in_fewer_passes():
    objective, params, data, batch_loss = _problem()
    for d in data:
        d.sizes = [len(b[1]) for b in d.batches]
    calls = []

    def batch_losses(p, items):  # one "pass" over several batches, as a shared encoder would run it
        calls.append([task for task, _ in items])
        return [batch_loss(p, task, batch) for task, batch in items]

    packed = SampleObjective(objective.block_names, data, batch_loss, batch_losses=batch_losses, pass_size=8)
    loss, grad = _reference(params, data, batch_loss, {"a", "b"})
    evaluated = packed.loss_and_grad(params)
    assert calls == [["a", "b"], ["a"]]  # sizes 3, 2, 4 into passes of <= 8: (3 + 4), (2)
    assert packed.forward_passes == packed.backward_passes == 2
    assert abs(evaluated.loss - loss) < 1e-6 and abs(packed.loss(params) - loss) < 1e-6
    for name in grad:
        torch.testing.assert_close(evaluated.grad[name], grad[name], rtol=1e-5, atol=1e-7)
    split = packed.loss_and_grad(params, per_task=True)  # per-task rows: one task's batches per pass
    assert len(calls) == 4 and packed.backward_passes == 2 + 3  # loss() made the 2 calls since; per-task rows none
    for name in grad:
        torch.testing.assert_close(split.total_grad()[name], grad[name], rtol=1e-5, atol=1e-7)


def test_a_shared_clip_tower_pass_gives_each_batch_its_own_loss(micro_pool):
    from lightning.fabric import Fabric

    from fusion_bench_fw.families.clip_vision import CLIPVisionFamily

    family = CLIPVisionFamily(micro_pool.make_modelpool(), Fabric(accelerator="cpu", devices=1))
    model = family.load_base()
    tasks = micro_pool.eval_tasks[:2]
    family.prepare(model, tasks)
    params = dict(model.named_parameters())
    for loss in ("cross_entropy", "entropy"):
        items = [(task, batch) for k, task in enumerate(tasks) for batch in family.task_batches(task, loss, 5, k, 3).batches]
        with torch.no_grad():
            joint = family.batch_losses(model, loss)(params, items)
            alone = [family.batch_loss(model, loss)(params, task, batch) for task, batch in items]
        assert len(items) == 4 and len({float(v) for v in alone}) == 4  # batches of 3 and 2 per task, all different
        torch.testing.assert_close(torch.stack(joint), torch.stack(alone), rtol=1e-5, atol=1e-6)
