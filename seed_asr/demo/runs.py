"""The demo's steps as subprocesses: training runs and evaluations in their own folders (each skipped
when its result exists, so a killed demo resumes), and the wall clock of each step."""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig

from seed_asr.utils.checkpoints import checkpoint_step

T = TypeVar("T")

STOP_GRACE_S = 30.0  # how long a step's process may take to exit after SIGTERM before it is killed


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` in the main thread instead of ending the process
    at once: the running step's process is then stopped too (`run_logged`) and the step's time recorded
    (`Clock`); by default a terminated demo would leave its training step running, still writing to the
    run folder that a resumed demo trains in."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def init_from_overrides(out: Path, sources: dict[str, str] | None) -> list[str]:
    """``stage.init_from`` taking each parameter regex from the run folder ``out/<run>``."""
    if not sources:
        return []
    items = ", ".join(f"{{path: {out / run}, include: ['{rx}']}}" for run, rx in sources.items())
    return [f"stage.init_from=[{items}]"]


def run_logged(cmd: list[str], log_file: Path) -> None:
    """Run a command, echoing it, with its output in ``log_file``; raise naming the log on failure."""
    print("$ " + shlex.join(cmd), flush=True)
    with log_file.open("a") as handle:
        child = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
        try:
            code = child.wait()
        except BaseException:  # SIGTERM (`sigterm_as_exit`), Ctrl-C: the step does not outlive the demo
            child.terminate()
            try:
                child.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
    if code != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"command failed ({code}); last lines of {log_file}:\n{tail}")


def train_run(
    out: Path, corpus: Path, name: str, stage: str, steps: int, extra: list[str], cfg: DictConfig
) -> dict:
    """One stage run in ``out/name``; skipped when it already finished, resumed when interrupted. Returns
    its record (``done.json``): run, stage, steps (the cap) and the steps it trained."""
    run_dir = out / name
    done = run_dir / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "seed_asr.train",
        f"stage={stage}",
        f"experiment={cfg.stage_experiment}",
        f"paths.corpus_dir={corpus}",
        f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={steps}",
        "ckpt_path=last",
        *cfg.train_overrides,
        *extra,
    ]
    run_logged(cmd, run_dir / "stdout.log")
    # a run may stop before its cap (e.g. the lm stage's stop_at_name_gain)
    trained = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    record = {"run": name, "stage": stage, "steps": steps, "trained_steps": trained}
    done.write_text(json.dumps(record))
    return record


def eval_run(
    out: Path, corpus: Path, name: str, overrides: Sequence[str] = (), split: str = "test"
) -> dict[str, Any]:
    """WER/CER of a run's last checkpoint on a corpus split (``out/eval_<name>[_<split>]/results.json``),
    with the breakdowns by what the corpus' training split holds (``heard_from``)."""
    eval_dir = out / (f"eval_{name}" if split == "test" else f"eval_{name}_{split}")
    results = eval_dir / "results.json"
    if not results.exists():
        cmd = [
            sys.executable,
            "-m",
            "seed_asr.eval",
            f"ckpt={out / name}",
            f"paths.corpus_dir={corpus}",
            f"hydra.run.dir={eval_dir}",
            f"shards={corpus / split / 'shard-*.tar'}",
            f"heard_from={corpus / 'train' / 'shard-*.tar'}",
            *overrides,
        ]
        eval_dir.mkdir(parents=True, exist_ok=True)
        run_logged(cmd, eval_dir / "stdout.log")
    return json.loads(results.read_text()) | {"hyps_file": str(eval_dir / "hyps.jsonl")}


class Clock:
    """Wall time of each demo step, kept in ``path`` and accumulated over invocations: a step that a
    resumed demo finds done adds nothing, an interrupted one counts both of its parts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
        self.steps: list[str] = []  # run by this invocation, in order

    def run(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, its time added to step ``name``."""
        self.steps.append(name)
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.time() - start, 1)
            self.path.write_text(json.dumps(self.seconds, indent=2))

    def timings(self, details: Mapping[str, dict] | None = None) -> list[dict]:
        """This invocation's steps in order: ``{"run": name, **details[name], "seconds": accumulated}``."""
        details = details or {}
        return [{"run": n, **details.get(n, {}), "seconds": self.seconds[n]} for n in self.steps]
