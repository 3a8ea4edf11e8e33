"""scripts/bench_quant_asr.py: HQQ puts its own weights into exactly the linears the quant spec selects."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from seed_asr.quant.spec import QuantSpec
from seed_asr.quant.speech_llm import check_spec
from tests.unit.models_helpers import tiny_speech_llm

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _bench():
    sys.path.insert(0, str(SCRIPTS))  # the script imports its sibling quant_peers
    try:
        spec = importlib.util.spec_from_file_location("bench_quant_asr", SCRIPTS / "bench_quant_asr.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def test_hqq_replaces_the_selected_linears_by_its_weights_and_leaves_the_rest() -> None:
    pytest.importorskip("hqq")
    bench = _bench()
    torch.manual_seed(0)
    model = tiny_speech_llm().eval()
    spec = QuantSpec.from_cfg({"name": "t", "config": {"bits": 2, "group_size": 32}, "exclude": ["down_proj"],
                               "calib_batches": 1})
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert bench.hqq_in_place(model, spec) == check_spec(model, spec)
    changed = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        selected = ("encoder.blocks." in name or "converter." in name or ".layers." in name) \
            and "down_proj" not in name
        expected = bench.hqq_weight(before[name], 2, 32) if selected else before[name]
        assert torch.equal(module.weight, expected), name
        changed += selected
    assert changed == check_spec(model, spec) > 0
