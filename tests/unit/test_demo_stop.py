"""A demo stopped with SIGTERM stops its running step too, and records the step's time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

DEMO = textwrap.dedent("""
    import sys
    from pathlib import Path
    from seed_asr.demo.runs import Clock, run_logged, sigterm_as_exit
    out = Path(sys.argv[1])
    step = [sys.executable, "-c", "import os, time; open(%r, 'w').write(str(os.getpid())); time.sleep(120)"
            % str(out / "step.pid")]
    with sigterm_as_exit():
        Clock(out / "timings.json").run("train", run_logged, step, out / "step.log")
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_running_step_and_records_its_time(tmp_path: Path) -> None:
    demo = subprocess.Popen([sys.executable, "-c", DEMO, str(tmp_path)])
    pid_file = tmp_path / "step.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    step_pid = int(pid_file.read_text())
    time.sleep(0.5)  # the step runs >= 0.5 s (the clock keeps tenths of seconds)
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(timeout=60) == 128 + signal.SIGTERM
    assert not _alive(step_pid)  # without the handler the step would sleep on, orphaned
    assert json.loads((tmp_path / "timings.json").read_text())["train"] >= 0.5
