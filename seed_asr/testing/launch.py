"""Starting a local process group the way torchrun or SLURM would (tests and benchmarks)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

# seconds a hung process group gets to print its stacks after SIGABRT before it is killed
DUMP_GRACE_S = 20


class HungProcess(AssertionError):
    """A command outlived its timeout; the message holds the tails of its output, with the Python stack
    of every thread of every process in its group."""


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_process(
    command: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` in a process group of its own, so
    that a hang is diagnosed and cleaned up: past `timeout`, every process of the group (launched
    ranks included) prints its Python stacks and is killed, and ``HungProcess`` is raised.

    Args:
        command: the program and its arguments.
        timeout: seconds to wait for the command.
        env: the whole environment of the command (None: this process's); ``PYTHONFAULTHANDLER`` is
            set in it.
        cwd: working directory.
    """
    full_env = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        list(command), env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=DUMP_GRACE_S)
        except subprocess.TimeoutExpired:
            out = err = None
        _kill_group(proc.pid)
        if out is None:
            out, err = proc.communicate()
        raise HungProcess(
            f"{' '.join(command)} did not end within {timeout:.0f} s; its stacks and output:\n"
            f"--- stdout ---\n{out[-6000:]}\n--- stderr ---\n{err[-12000:]}"
        ) from None
    _kill_group(proc.pid)  # ranks a crashed launcher left behind
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


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
        timeout: seconds to wait for every rank; the ranks still running then write their Python
            stacks into their logs and are stopped.

    Returns:
        Exit codes by rank (-6 or -9 for a rank stopped at the timeout).
    """
    logs.mkdir(parents=True, exist_ok=True)
    base = {
        **os.environ,
        **(env or {}),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(world_size),
        "NODE_RANK": "0",
        "PYTHONFAULTHANDLER": "1",
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
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGABRT)  # each rank's stacks into its log
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=DUMP_GRACE_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs]
