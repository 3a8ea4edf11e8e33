"""decoupleq stands alone: it and its tests import only torch, safetensors, Triton and the stdlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import decoupleq

TESTS = Path(__file__).resolve().parent
LIBRARY = Path(decoupleq.__file__).resolve().parent
#: decoupleq itself and its dependencies (the `decoupleq` and `decoupleq-kernels` extras of pyproject.toml).
DEPENDENCIES = {"decoupleq", "torch", "safetensors", "triton"}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path``, at module level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("folder", "allowed"), [(LIBRARY, DEPENDENCIES), (TESTS, DEPENDENCIES | {"pytest"})],
                         ids=["library", "tests"])
def test_imports_stay_within_the_declared_dependencies(folder: Path, allowed: set[str]) -> None:
    outside = {
        str(path.relative_to(folder)): sorted(extra)
        for path in sorted(folder.rglob("*.py"))
        if (extra := imported_packages(path) - allowed - set(sys.stdlib_module_names))
    }
    assert not outside


def test_tests_set_up_with_seed_asr_blocked_and_no_outer_conftest() -> None:
    """Collect every decoupleq test and set up its fixtures, with ``import seed_asr`` failing and
    ``tests/conftest.py`` not loaded (``--confcutdir``): what a user who took only decoupleq has."""
    script = (
        "import sys, pytest\n"
        "sys.modules['seed_asr'] = None  # any import of it raises ImportError\n"
        "sys.exit(pytest.main(sys.argv[1:]))\n"
    )
    args = ["--setup-only", "-q", "-p", "no:cacheprovider", "--confcutdir", str(TESTS), str(TESTS)]
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
