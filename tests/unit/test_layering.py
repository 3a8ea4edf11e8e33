"""The package layering (scripts/check_layering.py): no import points upward, no cycle between units."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_layering.py"
spec = importlib.util.spec_from_file_location("check_layering", SCRIPT)
layering = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layering)


def test_the_packages_import_only_downward_and_without_cycles() -> None:
    assert layering.violations(layering.unit_graph()) == []
    assert layering.module_violations() == []  # no cycle between modules either, inside a unit too


def test_the_checker_names_upward_imports_cycles_and_units_without_a_floor() -> None:
    graph = {
        "seed_asr.models": {"seed_asr.data": {"seed_asr/models/a.py"}},   # floor 4 -> 5: upward
        "seed_asr.data": {"seed_asr.models": {"seed_asr/data/b.py"}},     # and back: a cycle
        "decoupleq": {"seed_asr.utils": {"decoupleq/c.py"}},              # the library must stand alone
        "seed_asr.newpkg": {"seed_asr.utils": {"seed_asr/newpkg/d.py"}},
    }
    found = layering.violations(graph)
    assert "seed_asr.newpkg has no floor in FLOORS" in found
    assert any(v.startswith("upward: seed_asr.models (floor 4) imports seed_asr.data") for v in found)
    assert any(v.startswith("upward: decoupleq (floor 0) imports seed_asr.utils") for v in found)
    assert "cycle: seed_asr.data -> seed_asr.models -> seed_asr.data" in found
    assert len(found) == 4


def test_imports_inside_functions_and_relative_imports_count() -> None:
    module = layering.ROOT / "seed_asr" / "models" / "probe.py"  # a path only: nothing is written
    source = "def f():\n    from seed_asr.demo import report\n    from ..data import audio\n"
    found = layering.imports_of_source(source, module)
    assert {"seed_asr.demo", "seed_asr.demo.report", "seed_asr.data", "seed_asr.data.audio"} <= found


def test_from_imports_resolve_to_the_module_they_load() -> None:
    module = layering.ROOT / "seed_asr" / "data" / "probe.py"
    source = "from seed_asr.data import cmvn\nfrom seed_asr.data.cmvn import load_cmvn\n"
    modules = {"seed_asr.data", "seed_asr.data.cmvn"}
    assert layering.imports_of_source(source, module, modules) == {"seed_asr.data.cmvn"}
