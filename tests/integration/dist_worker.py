"""One rank of a process group started by the distributed tests (as torchrun or SLURM would start it:
RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment, so Lightning launches
nothing). Runs each job of a JSON spec in turn in this process group and, on rank 0, writes what the
tests check: parameter counts at creation, the final step, and the DeepSpeed config of each job.

Usage: python tests/integration/dist_worker.py <spec.json>
  spec: {"jobs": [{"name", "overrides": [...], "output_dir"}], "result": <path>}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from seed_asr.config import compose_config
from seed_asr.train import train


def main(spec_path: str) -> None:
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    results = {}
    for job in spec["jobs"]:
        cfg = compose_config("train", job["overrides"], job["output_dir"])
        _, objects = train(cfg)
        trainer = objects["trainer"]
        results[job["name"]] = {
            "param_counts": objects["module"].param_counts,
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "deepspeed_config": getattr(trainer.strategy, "config", None),
        }
    if int(trainer.global_rank) == 0:
        Path(spec["result"]).write_text(json.dumps(results, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
