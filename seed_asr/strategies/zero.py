"""Lightning's DeepSpeed strategy with the checks and guarantees a cluster run needs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.core.optimizer import LRSchedulerConfig
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch.optim import Optimizer

from seed_asr.utils.atomic_checkpoint import replace_folder

OFFLOAD_HINT = "stage.optimizer._target_=deepspeed.ops.adam.DeepSpeedCPUAdam (or experiment=zero3_offload)"


def zero_checkpoint_world_size(folder: str | Path) -> int | None:
    """Ranks that wrote a DeepSpeed ZeRO checkpoint folder (one optimizer-state file each), or None
    when it holds no optimizer states."""
    ranks = {
        int(m.group(1))
        for f in Path(folder).rglob("*optim_states.pt")
        if (m := re.search(r"zero_pp_rank_(\d+)_", f.name))
    }
    return len(ranks) or None


class SeedDeepSpeedStrategy(DeepSpeedStrategy):
    """``DeepSpeedStrategy`` plus: checkpoint folders replaced atomically (a kill while saving leaves
    the previous checkpoint), a clear error when resuming on another number of ranks, and a check that
    optimizer offload runs DeepSpeed's CPU Adam.

    Args:
        logging_batch_size_per_gpu: DeepSpeed's samples-per-step figure for its own throughput logs.
            Lightning's "auto" reads the loader's ``batch_size``, which our loaders of ready-made dynamic
            batches (``batch_size=None``) do not have: a fixed 1 by default.
        **kwargs: ``DeepSpeedStrategy`` options.
    """

    def __init__(self, logging_batch_size_per_gpu: int | str = 1, **kwargs: Any) -> None:
        super().__init__(logging_batch_size_per_gpu=logging_batch_size_per_gpu, **kwargs)

    def _init_optimizers(self) -> tuple[Optimizer, LRSchedulerConfig | None]:
        optimizer, scheduler = super()._init_optimizers()
        offload = (self.config.get("zero_optimization") or {}).get("offload_optimizer") or {}
        if offload.get("device") in ("cpu", "nvme"):
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            if not isinstance(optimizer, DeepSpeedCPUAdam):
                raise ValueError(
                    f"the strategy offloads optimizer states to {offload['device']}, which needs DeepSpeed's "
                    f"CPU Adam, but the stage's optimizer is {type(optimizer).__module__}."
                    f"{type(optimizer).__name__}: set {OFFLOAD_HINT}"
                )
        return optimizer, scheduler

    def save_checkpoint(self, checkpoint: dict, filepath: Any, storage_options: Any = None) -> None:
        """Every rank writes its shard into ``<filepath>.tmp``; rank 0 then swaps it into place."""
        target = Path(self.broadcast(str(filepath)))
        tmp = target.with_name(target.name + ".tmp")
        if self.is_global_zero and tmp.exists():
            shutil.rmtree(tmp)
        self.barrier("zero_checkpoint_tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier("zero_checkpoint_written")
        if self.is_global_zero:
            replace_folder(tmp, target)
        self.barrier("zero_checkpoint_replaced")

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Resume from a ZeRO folder written by as many ranks as this run has (else a clear error)."""
        written_by = zero_checkpoint_world_size(checkpoint_path) if Path(checkpoint_path).is_dir() else None
        if written_by is not None and written_by != self.world_size:
            raise ValueError(
                f"checkpoint {checkpoint_path} holds ZeRO optimizer states partitioned over {written_by} "
                f"ranks, but this run has {self.world_size}: resume with {written_by} ranks, or start a "
                f"new run from its weights (`seed-asr export {checkpoint_path} <out>` then "
                "stage.init_from=<out>; the optimizer state restarts)"
            )
        return super().load_checkpoint(checkpoint_path, weights_only)
