"""Training across processes with torch.distributed: one process per device, DDP, rank 0 writes.

torchrun's convention throughout: a process learns its place from ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` and finds its group at ``MASTER_ADDR:MASTER_PORT``. So the same trainer runs under
``torchrun`` (several machines: README, "Training across GPUs") or under :func:`launch`, which starts
``devices`` processes on this machine for ``adacs train --devices N`` and a training job's ``devices``.
:func:`launch` runs rank 0 in the calling process, so that its progress callback, and a cancellation
raised from it, work as in one process; ranks 1..N-1 are subprocesses running this module
(subprocesses, not ``multiprocessing``: a Celery prefork child is daemonic and may not have children).

What the trainer (:mod:`models.trainer`) does with a :class:`Group`:
- every rank builds the networks from the same seed and resumes the same checkpoint (rank 0 reads it
  and broadcasts it: ranks on other machines need not see the file), then wraps each network it
  differentiates in DDP, which averages the gradients;
- every rank draws the same global batch from the same seeded sampler and keeps its share
  (DistributedSampler's rule, one order for all and a slice each, applied to the trainer's draws with
  replacement; see :func:`models.training.data.sample_micro_batches`), so N processes of ``B / N``
  pairs make the update one process makes with ``B``;
- each update's logs are averaged over the ranks, so ``m_t`` (which the scoring update reads) is the
  same on every rank;
- rank 0 alone validates, draws pictures, writes checkpoints (of the bare modules: a checkpoint of N
  processes resumes in one) and the artifact, and reports progress; when its callback raises (a
  cancelled job), every rank stops after the same update.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Group", "StopRequested", "check_devices", "init_from_env", "launch", "launched_by_torchrun",
           "sync_gradients", "train_on_devices", "unwrap"]

# How long a rank waits for the others at a collective (and for them to join): rank 0 validates, draws
# pictures and writes the checkpoint while the others wait at the next update's all-reduce, seconds on
# ACDC; past this a rank that died without a word (NCCL does not notice a dead peer) ends the run.
TIMEOUT = timedelta(minutes=10)
GRACE_S = 60.0  # how long the other ranks get to finish once rank 0 has returned
FAILED_GRACE_S = 10.0  # ... once it has raised (after a cancellation they stop within an update)


class StopRequested(Exception):
    """Raised on ranks 1..N-1 when rank 0's callback stopped training (a cancelled job, say)."""


@dataclass(frozen=True)
class Group:
    """This process's place among the ranks that train one model; ``Group()`` is a run in one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> Group:
        """The initialised process group's view of this process, or one process when there is none."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` for a CUDA run across processes, else ``device``."""
        if self.world_size > 1 and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, module: torch.nn.Module | None) -> torch.nn.Module | None:
        """``module`` in DDP (across processes), which averages its gradients over the ranks at backward.

        Every parameter of every architecture gets a gradient in every update (checked for each
        architecture and method), so DDP need not search the graph for unused ones. No architecture
        has batch norm (TransMorph's instance norm is per pair), so a rank's share of a batch is
        normalised as in one process and no SyncBatchNorm is needed.
        """
        if module is None or self.world_size == 1:
            return module
        device = next(module.parameters()).device
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def mean(self, logs: dict[str, float]) -> dict[str, float]:
        """The logs of one update averaged over the ranks (each rank's are means over its equal share)."""
        if self.world_size == 1:
            return logs
        keys = sorted(logs)
        values = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(values)
        return dict(zip(keys, (values / self.world_size).tolist()))

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any: a collective, so every rank must ask."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([int(flag)], device=self._comm_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; others pass anything, e.g. None)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def seed(self, seed: int, epoch: int) -> None:
        """Give ranks 1..N-1 their own stream of torch's generators (a stochastic forward's noise, e.g.
        DiffuseMorph's), from the seed, the rank and the epoch they start at. Rank 0 keeps the stream
        one process would draw, which its checkpoints save."""
        if self.rank > 0:
            torch.manual_seed(int(np.random.SeedSequence([seed, self.rank, epoch]).generate_state(1)[0]))

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else \
            torch.device("cpu")


def unwrap(module: torch.nn.Module | None) -> torch.nn.Module | None:
    """The bare network of a DDP wrapper (for forwards without gradients, validation and saving)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def sync_gradients(module: torch.nn.Module | None, on: bool) -> None:
    """Whether the next backward through a DDP ``module`` all-reduces its gradients. nanoGPT's toggle:
    the micro-batches of one update accumulate locally and only the last one's backward communicates
    (averaging after each would give the same sum, with one all-reduce per micro-batch). No-op otherwise."""
    if isinstance(module, DistributedDataParallel):
        module.require_backward_grad_sync = on


def backend_for(device: str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher of its convention) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> Group:
    """Join the process group torchrun's variables describe (nccl on CUDA, else gloo); this rank's Group."""
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend_for(device), timeout=TIMEOUT)
    return Group.current()


def check_devices(devices: int, batch_size: int, device: str) -> None:
    """ValueError unless ``devices`` processes can share the updates of ``batch_size`` pairs on ``device``."""
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    if batch_size % devices:
        raise ValueError(f"batch_size {batch_size} must be a multiple of devices {devices}: each of the "
                         f"{devices} processes takes an equal share of every update's pairs")
    if devices > 1 and torch.device(device).type == "cuda" and devices > torch.cuda.device_count():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise ValueError(f"devices {devices}, but this process sees {torch.cuda.device_count()} CUDA "
                         f"device(s) (CUDA_VISIBLE_DEVICES={visible}); one process runs per GPU")


def train_on_devices(devices: int, cfg: Any, train_pairs: Any, out_dir: Any, **main_kwargs: Any) -> Any:
    """:func:`models.trainer.train` over ``devices`` processes of this machine (``main_kwargs``, e.g.
    the callback and the validation pairs, go to rank 0), or, under torchrun, as this process's rank of
    torchrun's group (``devices`` must then be 1: torchrun decides the processes)."""
    from models.trainer import train

    if launched_by_torchrun():
        if devices != 1:
            raise ValueError(f"devices {devices} under torchrun: torchrun starts the processes "
                             "(--nproc-per-node, --nnodes); leave devices at 1")
        group = init_from_env(cfg.device)
        try:
            result = train(cfg, train_pairs, out_dir, **(main_kwargs if group.is_main else {}))
            dist.barrier()  # every rank is done (rank 0 has written the model) before any leaves
            return result
        finally:
            dist.destroy_process_group()
    check_devices(devices, cfg.batch_size, cfg.device)
    return launch(devices, cfg.device, train, (cfg, train_pairs, out_dir), main_kwargs)


def launch(devices: int, device: str, fn: Callable[..., Any], args: tuple,
           main_kwargs: dict[str, Any] | None = None) -> Any:
    """Run ``fn(*args, **main_kwargs)`` here as rank 0 of ``devices`` processes and ``fn(*args)`` in
    ``devices - 1`` subprocesses, all in one process group; return rank 0's result.

    ``fn`` must be importable by name (it is pickled, as are ``args``). ``main_kwargs`` go to rank 0
    alone: the progress callback and what only rank 0 reads (validation pairs, say). One device is a
    plain call with no process group. A rank that fails fails the launch with its traceback; when
    rank 0 raises, the others are stopped (after a cancellation they stop by themselves).
    """
    main_kwargs = main_kwargs or {}
    if devices == 1:
        return fn(*args, **main_kwargs)
    if dist.is_available() and dist.is_initialized():
        raise RuntimeError("already in a process group (under torchrun?): call the function itself")
    threads = max(1, torch.get_num_threads() // devices)  # the machine's cores, shared out
    with tempfile.TemporaryDirectory(prefix="adacs-ranks-") as name:
        folder, port = Path(name), _free_port()
        (folder / "payload.pkl").write_bytes(pickle.dumps((fn, args, device, threads)))
        children = [_spawn(rank, devices, port, folder / "payload.pkl") for rank in range(1, devices)]
        try:
            _wait_ready(children, folder)
            with _threads(threads):
                if torch.device(device).type == "cuda":
                    torch.cuda.set_device(0)
                # Rank 0 serves the rendezvous store on the port, the others connect to it: torchrun's
                # env:// rendezvous.
                dist.init_process_group(backend_for(device), init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                        world_size=devices, timeout=TIMEOUT)
                result = fn(*args, **main_kwargs)
                dist.barrier()  # every rank is done before any leaves (NCCL's teardown is collective)
        except BaseException as error:
            # Ended before the group goes down, so that a rank waiting on a failed rank 0 is stopped
            # rather than failing itself: a rank that failed first is the cause, rank 0's error its echo.
            _end(children, FAILED_GRACE_S)
            failure = _failure(folder)
            if failure is not None:
                raise RuntimeError(failure) from error
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        _end(children, GRACE_S)
        failure = _failure(folder, children)
        if failure is not None:
            raise RuntimeError(failure)
        return result


def _free_port() -> int:
    """A port free now on the loopback (torchrun's --standalone picks its port the same way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _spawn(rank: int, devices: int, port: int, payload: Path) -> subprocess.Popen:
    """Rank ``rank`` as ``python -m models.training.distributed PAYLOAD``, placed by torchrun's variables."""
    root = str(Path(__file__).resolve().parents[2])  # where ``models`` is imported from
    env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(devices),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "models.training.distributed", str(payload)], env=env)


def _wait_ready(children: list[subprocess.Popen], folder: Path) -> None:
    """Wait until every other rank has loaded its work (imports, data) and is about to join the group:
    a rank that fails before joining would otherwise leave rank 0 waiting for it until TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT.total_seconds()
    while not all((folder / f"rank{rank}.ready").exists() for rank in range(1, len(children) + 1)):
        exited = [(rank, child.returncode) for rank, child in enumerate(children, 1) if child.poll() is not None]
        if exited or time.monotonic() > deadline:
            raise RuntimeError(_failure(folder) or f"rank(s) {exited or 'all'} did not start (exit codes)")
        time.sleep(0.05)


def _end(children: list[subprocess.Popen], grace_s: float) -> None:
    """Wait ``grace_s`` for the other ranks to finish (they follow rank 0 within an update), then stop any left."""
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _failure(folder: Path, children: list[subprocess.Popen] = ()) -> str | None:
    """The first failed rank's traceback, or which rank exited with an error code (of ``children``), or None."""
    for path in sorted(folder.glob("rank*.error")):
        return f"{path.stem.replace('rank', 'rank ')} failed:\n{path.read_text(encoding='utf-8')}"
    failed = [(rank, child.returncode) for rank, child in enumerate(children, 1) if child.returncode]
    return f"rank {failed[0][0]} exited with code {failed[0][1]}" if failed else None


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _exit_with_parent() -> None:
    """End this rank if the process that launched it dies (a killed worker), rather than leave it waiting."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="adacs-parent-watch").start()


def _child(payload: Path) -> int:
    """Rank 1..N-1 of :func:`launch`: run the pickled call in the group, leave a traceback if it fails."""
    _exit_with_parent()
    rank, joined = int(os.environ["RANK"]), False
    try:
        fn, args, device, threads = pickle.loads(payload.read_bytes())  # our own file, in a private folder
        torch.set_num_threads(threads)
        (payload.parent / f"rank{rank}.ready").touch()
        init_from_env(device)
        joined = True
        fn(*args)
        dist.barrier()
    except StopRequested:
        return 0
    except BaseException:
        (payload.parent / f"rank{rank}.error").write_text(traceback.format_exc(), encoding="utf-8")
        return 1
    finally:
        if joined:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    # Through the imported module, not this ``__main__`` copy: the trainer raises *its* StopRequested.
    from models.training.distributed import _child as child

    sys.exit(child(Path(sys.argv[1])))
