"""torch.distributed for pretraining: joining the process group that torchrun set up,
the few collectives the training loops need, and launching torchrun for
``pnerf pretrain --nproc N``.

Every rank holds a full replica of the model, the optimizer state, the occupancy grid
and the training RNG; the ranks stay identical because every update is computed from
the same all-reduced numbers. Only the expensive part is split: the rays of a batch
(joint, latent) or the subjects of a meta batch (meta). See docs/DISTRIBUTED.md.

In one process (no torchrun, or WORLD_SIZE=1) every collective is a no-op, so the
single-process code path is unchanged and bit-identical to what it was.
"""
from __future__ import annotations

import atexit
import datetime
import os
import sys
from dataclasses import dataclass

import torch

# A rank that waits longer than this in a collective gives up (another rank died or hangs).
TIMEOUT_S = float(os.environ.get("PNERF_DIST_TIMEOUT_S", "1800"))


def world_size_from_env() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ValueError(f"environment WORLD_SIZE: must be an integer, got {os.environ.get('WORLD_SIZE')!r}") from None


def backend_for(device) -> str:
    """gloo for CPU tensors, nccl for CUDA tensors."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclass
class Comm:
    """The process group as the training loops see it. ``Comm()`` is one process."""
    rank: int = 0
    world: int = 1
    owns_group: bool = False   # this Comm initialised the group
    backend: str = "none"
    device: str = "cpu"       # where collective buffers live (cuda for nccl)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's slice [lo, hi) of n items: contiguous, sizes differ by at most one,
        rank 0 first, so concatenating every rank's slice gives back 0..n-1."""
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def all_reduce_sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor over the ranks, in place, with one all-reduce (one flat buffer)."""
        if not self.active or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        i = 0
        for t in tensors:
            k = t.numel()
            t.copy_(flat[i:i + k].view_as(t))
            i += k

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's value of ``flag`` on every rank (decisions that depend on a clock)."""
        if not self.active:
            return bool(flag)
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item() > 0)

    def check_in_sync(self, tensors: list[torch.Tensor], what: str) -> None:
        """Raise if the replicas differ (a bug: every rank must apply the same updates)."""
        if not self.active:
            return
        import torch.distributed as dist

        sums = torch.stack([t.detach().double().sum() for t in tensors]).to(self.device)
        lo, hi = sums.clone(), sums.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if not torch.equal(lo, hi):
            raise RuntimeError(f"distributed pretraining: the ranks' {what} differ (they must stay identical)")

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group (then no further pretrain() in this process can use it)."""
        if self.owns_group:
            _destroy()
            self.owns_group = False


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def setup(device="cpu") -> Comm:
    """Join the process group that torchrun describes in the environment (RANK,
    WORLD_SIZE, MASTER_ADDR, MASTER_PORT), or ``Comm()`` when there is none."""
    world = world_size_from_env()
    if world <= 1:
        return Comm()
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = backend_for(device)
    if dist.is_initialized():
        return Comm(dist.get_rank(), dist.get_world_size(), False, dist.get_backend(), str(device))
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but the environment lacks {', '.join(missing)}: launch with torchrun "
                         "(or pnerf pretrain --nproc N)")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    # Kept for the life of the process: a second pretrain() in the same process reuses it
    # (destroying and re-creating a group on torchrun's store can pair stale keys and hang).
    atexit.register(_destroy)
    return Comm(dist.get_rank(), dist.get_world_size(), True, backend, str(device))


def launch(module: str, args: list[str], nproc: int, env: dict | None = None) -> int:
    """Run ``python -m module args`` in ``nproc`` processes on this machine, as
    ``torchrun --standalone --nproc-per-node nproc`` would (torch's elastic launcher, in
    this process, so that a failed rank is one line, not the launcher's traceback);
    -> 0, or the exit code of the first rank that failed. The ranks inherit stdout and
    stderr."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ValueError(f"argument --nproc: must be >= 1, got {nproc}")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets, without its warning
    log = logging.getLogger("torch.distributed.elastic")
    level = log.level
    log.setLevel(logging.CRITICAL)  # the ranks print their own errors
    try:
        elastic_launch(config, sys.executable)("-m", module, *args)
        return 0
    except ChildFailedError as e:
        first = min(e.failures.values(), key=lambda f: f.timestamp) if e.failures else None
        code = getattr(first, "exitcode", 1)
        return code if isinstance(code, int) and code > 0 else 1
    finally:
        log.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
