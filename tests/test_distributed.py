"""Data-parallel training (model/distributed.py) with 2 CPU processes and the gloo backend.

- DistributedDataParallel's gradients equal the mean of the two processes' own gradients, for
  the NSM's hand-written backward pass (the same noise is replayed in both computations).
- A seeded 2-process run of model.train.train_model ends with the same parameters twice.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model import distributed
from model.nsm import NSMNet
from model.train import TrainOptions, train_model

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distributed.init_from_env("cpu")


def _gradients_worker(rank: int, port: int, out: str) -> None:
    _join(rank, port)
    torch.manual_seed(0)                      # the same network in both processes
    net = NSMNet((12, 8, 6, 3))
    reference = NSMNet((12, 8, 6, 3))
    reference.load_state_dict(net.state_dict())
    ddp = distributed.wrap(net, torch.device("cpu"))
    # Each process its own half of the batch.
    gen = torch.Generator().manual_seed(100 + rank)
    x = torch.where(torch.rand(5, 12, generator=gen) < 0.5, 1.0, -1.0)
    y = torch.randint(0, 3, (5,), generator=gen)

    torch.manual_seed(7 + rank)
    torch.nn.functional.cross_entropy(reference(x), y).backward()
    local = [p.grad.clone() for p in reference.parameters()]
    torch.manual_seed(7 + rank)               # replay the same noise through DDP
    torch.nn.functional.cross_entropy(ddp(x), y).backward()
    averaged = [p.grad.clone() for p in net.parameters()]

    gathered = [[torch.empty_like(g) for _ in range(WORLD)] for g in local]
    for g, slots in zip(local, gathered):
        dist.all_gather(slots, g)
    if rank == 0:
        torch.save({"averaged": averaged, "gathered": gathered}, out)
    del ddp                                   # shutdown() wants no wrapper in use
    distributed.shutdown()


def _train_worker(rank: int, port: int, out: str) -> None:
    _join(rank, port)
    opts = TrainOptions(dataset="digits", model="nsm", hidden=(16,), levels=1,
                        limit_train=400, limit_test=50, epochs=2, batch_size=40, seed=3,
                        eval_samples=(1,), quantize=False, progress=False, out=out)
    model, metrics = train_model(opts)
    assert (metrics is None) == (rank != 0)
    distributed.shutdown()


def _spawn(fn, *args):
    mp.start_processes(fn, args=(_free_port(), *args), nprocs=WORLD, join=True,
                       start_method="spawn")


def test_ddp_gradients_are_the_mean_of_the_processes(tmp_path):
    out = tmp_path / "grads.pt"
    _spawn(_gradients_worker, str(out))
    got = torch.load(out)
    assert len(got["averaged"]) == 8          # 2 hidden layers (w, beta, c), output (w, b)
    for avg, per_rank in zip(got["averaged"], got["gathered"]):
        assert not torch.equal(per_rank[0], per_rank[1])     # the halves differ
        torch.testing.assert_close(avg, (per_rank[0] + per_rank[1]) / WORLD, rtol=1e-5,
                                   atol=1e-6)


def test_seeded_two_process_run_is_reproducible(tmp_path):
    states = []
    for run in ("a", "b"):
        _spawn(_train_worker, str(tmp_path / run))
        states.append(torch.load(tmp_path / run / "checkpoint.pt", weights_only=False))
    assert [h["epoch"] for h in states[0]["history"]] == [1, 2]
    for key, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][key]), key
    # Better than chance (10 %): the two processes did train.
    assert states[0]["history"][-1]["train_acc"] > 0.2


@pytest.mark.parametrize("name", ["cuda:0", "cuda"])
def test_cuda_asked_for_and_absent_is_one_line(name, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the message is for machines without it")
    from model.train import main
    assert main(["--device", name, "--epochs", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: device: {name!r} asked for, but" in err
