"""``trainer.precision: auto``: bf16-mixed on CPUs with native bf16 (AVX-512 BF16 or AMX) and on CUDA
GPUs with native bf16, 32-true elsewhere; `seed_asr.train.build` resolves it before the Trainer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from seed_asr.config import compose_config
from seed_asr.testing.synthetic import write_synthetic_shards
from seed_asr.train import build
from seed_asr.utils import precision

AVX512 = {"fpu", "sse2", "avx2", "avx512f", "avx512bw"}


@pytest.mark.parametrize(
    ("flags", "expected", "reason"),
    [
        (AVX512 | {"avx512_bf16"}, "bf16-mixed", "CPU has avx512_bf16"),
        (AVX512 | {"amx_bf16", "amx_tile"}, "bf16-mixed", "CPU has amx_bf16"),
        (AVX512 | {"avx512_bf16", "amx_bf16"}, "bf16-mixed", "CPU has avx512_bf16 and amx_bf16"),
        (AVX512, "32-true", "CPU has none of avx512_bf16, amx_bf16"),
        (set(), "32-true", "CPU has none of avx512_bf16, amx_bf16"),
    ],
)
def test_cpu_choice_follows_flags(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: str, reason: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for accelerator in ("cpu", "auto"):
        assert precision.auto_precision(accelerator, flags) == (expected, reason)


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_gpu_choice_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "GPU")
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation: bf16 and not including_emulation
    )
    for accelerator in ("gpu", "cuda", "auto"):  # the CPU's flags do not matter then
        assert precision.auto_precision(accelerator, {"avx512_bf16"})[0] == expected
    assert precision.auto_precision("cpu", set())[0] == "32-true"  # a CPU run on a GPU machine


def test_read_cpuinfo_first_processor(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Xeon A\nflags\t\t: fpu avx512_bf16\n\n"
        "processor\t: 1\nmodel name\t: Xeon B\nflags\t\t: fpu\n"
    )
    info = precision.read_cpuinfo(cpuinfo)
    assert info["model name"] == "Xeon A" and info["flags"].split() == ["fpu", "avx512_bf16"]
    assert precision.read_cpuinfo(tmp_path / "missing") == {}


def test_build_resolves_auto_before_the_trainer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(precision, "read_cpuinfo", lambda: {"flags": "fpu avx512_bf16"})
    write_synthetic_shards(tmp_path / "train", 1, 2, 0.5, 1.0, seed=0)  # the tokenizer's transcripts
    overrides = ["debug=tiny", "trainer.precision=auto", f"paths.corpus_dir={tmp_path}"]
    cfg = compose_config("train", overrides, tmp_path)
    with caplog.at_level(logging.INFO, logger="seed_asr.train"):
        trainer = build(cfg)["trainer"]
    assert cfg.trainer.precision == "bf16-mixed" and trainer.precision == "bf16-mixed"
    assert "precision auto -> bf16-mixed: CPU has avx512_bf16" in caplog.text
