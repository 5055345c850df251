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
    for name in grad:
        torch.testing.assert_close(split.grad[name], grad[name], rtol=1e-5, atol=1e-7)
        # the rows are not the total's storage, and the earlier result was not overwritten
        assert split.grad[name].data_ptr() not in {split.task_grads[t][name].data_ptr() for t in ("a", "b")}
        assert torch.equal(plain.grad[name], kept[name])
    assert objective.forward_passes == objective.backward_passes == 6
