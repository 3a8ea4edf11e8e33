"""scripts/bench_training.py from a fresh folder: it builds a corpus, times real ``Trainer.fit`` runs of
two variants and profiles the parts of a step; every figure is there and positive."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_training.py"
TINY = "model=tiny data.num_workers=1 data.max_batch_seconds=8 data.max_duration=8"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_training", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_training_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "bench.json"
    args = ["--corpus", str(corpus), "--build-utterances", "60", "--warmup", "2", "--steps", "2"]
    args += ["--profile-steps", "2", "--baseline", TINY, "--variant", "trainer.precision=auto"]
    bench = _bench()
    bench.main([*args, "--json", str(out)])
    assert (corpus / "cmvn.json").exists()
    results = json.loads(out.read_text())
    runs = results["runs"]
    assert list(runs) == ["baseline", "trainer.precision=auto"]
    assert runs["trainer.precision=auto"]["precision"] in ("bf16-mixed", "32-true")  # never "auto"
    for run in runs.values():
        assert run["audio_s_per_s"] > 0 and run["s_per_step"] > 0 and run["ratio"] > 0
    assert runs["baseline"]["ratio"] == 1.0
    parts = results["profile_s_per_step"]
    assert set(parts) == set(bench.PARTS) and all(s > 0 for s in parts.values())
    assert results["machine"]["torch_threads"] >= 1 and results["machine"]["data_workers"] == 1
    printed = capsys.readouterr().out
    assert "audio-s/s" in printed and "LLM fwd+bwd" in printed and "cpu_capability" in printed
