"""DeepSpeed on CPU processes, so the ZeRO paths run in tests on machines without a GPU.

Lightning's ``DeepSpeedStrategy`` refuses any accelerator but CUDA. DeepSpeed itself runs its ZeRO
stages on CPU tensors with the gloo backend, so this subclass only skips the CUDA checks: the
environment set-up of plain DDP, distributed init without the CUDA device-index validation, and a
CPU root device (indexed by local rank, as DeepSpeed reads a device index). Everything else (ZeRO
partitioning, checkpoints, offload) is real DeepSpeed.
"""

from __future__ import annotations

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy

from seed_asr.strategies.zero import SeedDeepSpeedStrategy


class CPUDeepSpeedStrategy(SeedDeepSpeedStrategy):
    """``DeepSpeedStrategy`` for ``accelerator="cpu"`` (tests and CPU-only debugging)."""

    strategy_name = "deepspeed_cpu"

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self) -> torch.device:
        # DeepSpeed reads the local rank from the device index; tensors on "cpu:<i>" live on the CPU.
        return torch.device("cpu", self.local_rank)


def deepspeed_strategy(accelerator: str = "auto", **kwargs) -> SeedDeepSpeedStrategy:
    """A DeepSpeed strategy for the trainer's accelerator: the CPU subclass on CPU, the GPU one otherwise.

    Args:
        accelerator: the trainer's ``accelerator`` setting (``"cpu"``, ``"gpu"``, ``"auto"``).
        **kwargs: ``DeepSpeedStrategy`` options (``stage``, ``offload_optimizer``, ...).
    """
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    return (CPUDeepSpeedStrategy if on_cpu else SeedDeepSpeedStrategy)(**kwargs)
