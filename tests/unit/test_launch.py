"""A hung child process group is diagnosed (every process prints its stacks) and cleaned up."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from seed_asr.testing.launch import HungProcess, run_local_group, run_process

RANK = "import time\ndef rank_waits():\n    time.sleep(600)\nrank_waits()"
# a launcher that starts a "rank" of its own (as Lightning's launcher does) and both wait forever
LAUNCHER = textwrap.dedent(
    f"""
    import subprocess, sys, time
    from pathlib import Path
    rank = subprocess.Popen([sys.executable, "-c", {RANK!r}])
    Path(sys.argv[1]).write_text(str(rank.pid))
    def launcher_waits():
        time.sleep(600)
    launcher_waits()
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


def test_a_hung_group_prints_every_processs_stack_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "rank.pid"
    with pytest.raises(HungProcess) as hung:
        run_process([sys.executable, "-c", LAUNCHER, str(pid_file)], timeout=5)
    message = str(hung.value)
    assert "did not end within 5 s" in message
    assert "launcher_waits" in message and "rank_waits" in message  # both processes' stacks
    assert not alive(int(pid_file.read_text()))


def test_a_command_that_ends_returns_its_output_and_code() -> None:
    done = run_process([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], timeout=60)
    assert (done.returncode, done.stdout) == (3, "out\n")


def test_ranks_past_the_timeout_write_their_stacks_into_their_logs(tmp_path: Path) -> None:
    command = [sys.executable, "-c", RANK]
    codes = run_local_group(command, 2, tmp_path, timeout=5)
    assert all(code != 0 for code in codes)
    for rank in range(2):
        assert "rank_waits" in (tmp_path / f"rank{rank}.log").read_text()
