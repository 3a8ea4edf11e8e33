"""The demo's clock: step times accumulate over invocations (a resumed demo), failures included."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from seed_asr.demo.runs import Clock


def test_clock_accumulates_over_invocations_and_failures(tmp_path: Path) -> None:
    path = tmp_path / "timings.json"
    assert Clock(path).run("ssl", lambda x: x + 1, 1) == 2

    def interrupted() -> None:
        time.sleep(0.2)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Clock(path).run("sft", interrupted)
    resumed = Clock(path)
    resumed.run("ssl", lambda: None)  # found done: adds (almost) nothing
    resumed.run("sft", time.sleep, 0.1)
    assert 0.3 <= json.loads(path.read_text())["sft"] < 1.0  # both parts of the interrupted step
    timings = resumed.timings({"ssl": {"steps": 3}})
    assert [t["run"] for t in timings] == ["ssl", "sft"]
    assert timings[0]["steps"] == 3 and timings[0]["seconds"] < 0.1 and "steps" not in timings[1]
