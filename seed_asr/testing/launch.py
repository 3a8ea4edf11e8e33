"""Starting a local process group the way torchrun or SLURM would (tests and benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_local_group(
    command: Sequence[str],
    world_size: int,
    logs: Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> list[int]:
    """Run ``command`` as ranks ``0..world_size-1`` on this machine (``RANK``, ``LOCAL_RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set, so Lightning launches nothing itself).

    Args:
        command: the program and its arguments, the same for every rank.
        world_size: number of processes.
        logs: folder receiving ``rank<r>.log`` (stdout and stderr of each rank).
        env: extra environment variables.
        timeout: seconds to wait for every rank; the rest are killed after it.

    Returns:
        Exit codes by rank (-9 for a rank killed at the timeout).
    """
    logs.mkdir(parents=True, exist_ok=True)
    base = {
        **os.environ,
        **(env or {}),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(world_size),
        "NODE_RANK": "0",
    }
    procs = []
    for rank in range(world_size):
        with (logs / f"rank{rank}.log").open("w") as log:
            rank_env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            procs.append(subprocess.Popen(list(command), env=rank_env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs]
