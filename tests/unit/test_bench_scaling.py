"""scripts/bench_scaling.py: the analytic FLOPs against hand-computed values, and its GPU path dry-run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_scaling.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_formulas_match_hand_computation() -> None:
    bench = _bench()
    assert bench.matmul_flops(params=10, tokens=3) == 180.0  # 6 * 10 * 3
    # 12 * layers 2 * width 4 * (3^2 + 1^2)
    assert bench.attention_flops(layers=2, width=4, seq_lens=[3, 1]) == 960.0
    assert bench.summarise([{"seconds": 2.0, "llm_tokens": 10, "audio_seconds": 4.0, "flops": 8.0}])[
        "tokens_per_s"
    ] == pytest.approx(5.0)


@pytest.mark.slow
def test_gpu_path_dry_run_on_cpu(capsys: pytest.CaptureFixture) -> None:
    _bench().main(["--gpu", "--dry-run", "--steps", "2", "--warmup", "1"])
    out = capsys.readouterr().out
    assert "MFU n/a" in out and "LLM tokens/s" in out
