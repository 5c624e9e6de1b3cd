"""The entropy term under DistributedDataParallel: with ``global_batch`` the neighbours are searched
over the batch of all processes, and two CPU processes (gloo) give the loss and the gradients of one
process on the same global batch."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nc_control import control_loss
from nc_control import EntropyRegularizer

WORLD, LOCAL, DIM, CLASSES, ALPHA = 2, 6, 5, 3, 0.5


class TinyNet(nn.Module):
    """encoder -> classifier, returning (encoder embedding, None, logits) like ControlledNet."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(DIM, 8), nn.Tanh(), nn.Linear(8, 4))
        self.classifier = nn.Linear(4, CLASSES)

    def forward(self, x):
        enc = self.encoder(x)
        return enc, None, self.classifier(enc)


def global_batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(WORLD * LOCAL, DIM, generator=g), torch.randint(0, CLASSES, (WORLD * LOCAL,), generator=g)


def loss_and_grads(model, x, y, entropy):
    loss, _, _ = control_loss(model(x), y, entropy, ALPHA, label_smoothing=0.1)
    model.zero_grad()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def worker(rank, init_file, results, global_search):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        model = nn.parallel.DistributedDataParallel(TinyNet())
        x, y = global_batch()
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        loss, grads = loss_and_grads(model, x[rows], y[rows], EntropyRegularizer(global_batch=global_search))
        mean_loss = loss.clone()
        dist.all_reduce(mean_loss)
        results[rank] = {"loss": (mean_loss / WORLD).item(), "grads": {k.removeprefix("module."): v for k, v in grads.items()}}
    finally:
        dist.destroy_process_group()


def run_two_processes(tmp_path, global_search):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(str(tmp_path / f"pg_{global_search}"), results, global_search), nprocs=WORLD)
        return dict(results)


def test_global_batch_entropy_two_processes_equal_one_process(tmp_path):
    x, y = global_batch()
    single_loss, single_grads = loss_and_grads(TinyNet(), x, y, EntropyRegularizer())
    results = run_two_processes(tmp_path, global_search=True)
    for rank in range(WORLD):
        torch.testing.assert_close(torch.tensor(results[rank]["loss"]), single_loss, rtol=1e-6, atol=1e-7)
        for name, grad in single_grads.items():
            torch.testing.assert_close(results[rank]["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=name)
    # without the gather each process searches only its own 6 rows: another loss (the test can fail)
    local = run_two_processes(tmp_path, global_search=False)
    assert abs(local[0]["loss"] - single_loss.item()) > 1e-3


def test_global_batch_is_the_single_process_loss_when_not_distributed():
    torch.manual_seed(0)
    e = torch.randn(10, 4)
    assert EntropyRegularizer(global_batch=True)(e).item() == EntropyRegularizer()(e).item()
    # the local search differs from the search over the whole batch once the batch is split
    halves = (EntropyRegularizer()(e[:5]) + EntropyRegularizer()(e[5:])) / 2
    assert abs(halves.item() - EntropyRegularizer()(e).item()) > 1e-3
