"""time/elapsed_min: logged during fit, continued from a checkpoint by a resumed run."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from seed_asr.callbacks import elapsed_time
from seed_asr.callbacks.elapsed_time import ElapsedTime


def test_elapsed_minutes_continue_from_the_checkpointed_count(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 160.0, 1000.0, 1030.0])  # seconds of time.monotonic at each call
    monkeypatch.setattr(elapsed_time.time, "monotonic", lambda: next(clock))
    first = ElapsedTime()  # started at 100 s
    state = first.state_dict()  # 1 min later
    assert state == {"elapsed_min": 1.0}
    resumed = ElapsedTime()  # a new process, started at 1000 s
    resumed.load_state_dict(state)
    assert resumed.elapsed_min() == 1.5  # 1 min before + 30 s now


def test_fit_logs_elapsed_minutes(tmp_path) -> None:
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=3, limit_val_batches=1, val_check_interval=2,
                        log_every_n_steps=1, callbacks=[ElapsedTime()], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(BoringModel())
    elapsed = float(trainer.callback_metrics["time/elapsed_min"])
    assert 0.0 < elapsed < 5.0
