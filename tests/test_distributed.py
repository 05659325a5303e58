"""torchrun with DistributedDataParallel on CPU (gloo): equivalence with one process, and resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import SRC, TINY, make_dataset, read_scalars
from unpaired import checkpoint as ckpt

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")


def torchrun(nproc: int, *args: str, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "unpaired", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


LR = 1e-4  # the default learning rate of both families
# The TF generators' conv biases that feed an instance norm: in exact arithmetic their gradient is 0
# (the norm subtracts the mean), so what they receive is float noise that differs with the batching.
NOISE_GRADIENT = re.compile(r"^(conv|down\.\d+\.conv|resblocks\.\d+\.conv[12])\.bias$")


def train_args(data, out, batch, iters=4, save_freq=2):
    return ["train", "--data", str(data), "--out", str(out), *TINY, "--batch-size", str(batch),
            "--iters", str(iters), "--save-freq", str(save_freq), "--print-freq", str(save_freq), "--log-freq", "1"]


@pytest.fixture(scope="module")
def even_data(tmp_path_factory):
    """8 images per training domain: epochs split evenly over 2 ranks and over batches of 2."""
    return make_dataset(tmp_path_factory.mktemp("ddp") / "data", n_train=8, n_test=2)


@pytest.mark.parametrize("model", ["ugatit", "ugatit_tf"])
def test_two_processes_of_batch_1_equal_one_process_of_batch_2(model, even_data, tmp_path):
    """Same data (rank r takes samples r, r+2, ... of each epoch order), same averaged gradients.

    The only intended difference is float summation order (gradients averaged by all-reduce
    instead of summed inside one batch), so parameters agree to ~1e-6, not bit for bit.
    """
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    torchrun(1, *train_args(even_data, single, 2), "--model", model)
    torchrun(2, *train_args(even_data, ddp, 1), "--model", model)
    # Only rank 0 wrote: one checkpoint per save, one set of grids, one event file.
    assert [p.name for p in ckpt.list_checkpoints(ddp / "checkpoints")] == ["0000002", "0000004"]
    assert len(list((ddp / "logs").glob("events.out.tfevents.*"))) == 1
    assert len(list((ddp / "samples").iterdir())) == 4
    a, _ = ckpt.load_weights(ckpt.latest_checkpoint(single / "checkpoints") / ckpt.WEIGHTS)
    b, _ = ckpt.load_weights(ckpt.latest_checkpoint(ddp / "checkpoints") / ckpt.WEIGHTS)
    for net in a:
        for key in a[net]:
            if model == "ugatit_tf" and NOISE_GRADIENT.match(key):
                # Adam moves a parameter by ~lr per step whatever its gradient's size: where that
                # gradient is rounding noise, the two runs move by up to lr in either direction.
                assert (a[net][key] - b[net][key]).abs().max() <= 2 * LR * 4, f"{net}.{key}"
            else:
                assert torch.allclose(a[net][key], b[net][key], atol=2e-5, rtol=1e-4), f"{net}.{key}"
    la, lb = read_scalars(single, "loss/Generator_loss"), read_scalars(ddp, "loss/Generator_loss")
    assert la.keys() == lb.keys() and all(abs(la[s] - lb[s]) <= 1e-4 * abs(la[s]) for s in la)


def _train_rank(rank: int, world_size: int, port: int, data: str, out: str, dump: str) -> None:
    """One torchrun-like rank: train, then dump this rank's own copy of every network."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from unpaired.models.ugatit.options import UGATITOptions
    from unpaired.options import build
    from unpaired.training.loop import Training

    opts = build(UGATITOptions, ("test", dict(data=data, out=out, light=True, img_size=32, ch=4, n_res=1, device="cpu",
                                              num_workers=0, n_samples=2, iters=3, save_freq=3, print_freq=3,
                                              log_freq=1)))
    training = Training(opts)
    training.run()
    torch.save({name: net.state_dict() for name, net in training.nets.items()}, f"{dump}/rank{rank}.pt")


def test_ranks_keep_identical_weights_spectral_norm_state_and_rho(even_data, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_train_rank, args=(2, port, str(even_data), str(tmp_path / "run"), str(tmp_path)),
                                nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    checked = 0
    for net, state in rank0.items():
        for key, value in state.items():
            assert torch.equal(value, rank1[net][key]), f"{net}.{key} differs between ranks"
            checked += key.endswith(("weight_u", "weight_v", "rho"))
    assert checked > 20  # the SN vectors of four Ds and the ρ of two generators were among them


def test_killed_torchrun_resumes(even_data, tmp_path):
    run = tmp_path / "run"
    proc = torchrun(2, *train_args(even_data, run, 1, iters=8, save_freq=2), wait=False)
    deadline = time.time() + 180
    while not ckpt.list_checkpoints(run / "checkpoints") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.list_checkpoints(run / "checkpoints"), "no checkpoint before the kill"
    torchrun(2, "train", "--auto-resume", "--out", str(run), *train_args(even_data, run, 1, iters=8, save_freq=2)[3:])
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")][-1] == "0000008"
    assert sorted(read_scalars(run, "loss/Generator_loss")) == list(range(1, 9))
