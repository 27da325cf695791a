"""Data parallelism through an existing launcher: ``torchrun --nproc_per_node N -m kaiyuan tune ...`` (or
``accelerate launch -m kaiyuan ...``) starts N copies of the run; this module makes them one run.

Owns reading the launcher's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), the process group (NCCL on CUDA,
gloo on CPU), sharing the run id that rank 0 creates, and the two collective operations the loop needs: summing the
step's trained-token count and summing LoRA gradients (small: only adapter matrices travel). With one process every
operation is a no-op and torch.distributed is never touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Distributed"]


@dataclass
class Distributed:
    world: int = 1  # processes in the run
    rank: int = 0  # this process (0 writes files, prints and registers)
    local_rank: int = 0  # GPU index on this machine
    backend: str = ""  # nccl | gloo (empty: single process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        """Join the launcher's process group when started by one; a plain process is a world of one."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        from kaiyuan.tune._model import import_torch

        torch = import_torch()
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(world=world, rank=dist.get_rank(), local_rank=local_rank, backend=backend)

    def share(self, value: str | None) -> str:
        """Rank 0's ``value`` on every rank (e.g. the run id it just created)."""
        if self.world == 1:
            assert value is not None
            return value
        import torch.distributed as dist

        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0)
        return str(box[0])

    def sum_int(self, value: int) -> int:
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        device = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        tensor = torch.tensor([value], dtype=torch.long, device=device)
        dist.all_reduce(tensor)
        return int(tensor.item())

    def sum_float(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        device = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def sum_gradients(self, params: list[Any]) -> None:
        """Add up every rank's gradients in place (the loss was already divided by the global token count)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
