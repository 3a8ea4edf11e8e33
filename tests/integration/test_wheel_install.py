"""A non-editable install (a wheel, what a cluster user puts into a shared environment) carries ``conf/``
and the corpus word lists as package data, and ``seed-asr train`` runs from it with the checkout out of
reach: the wheel is built from a copy of the checkout's files and installed with ``pip --target``; the
commands run with only that folder on ``PYTHONPATH`` (dependencies from this environment), in an empty
working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from seed_asr.testing.synthetic import write_synthetic_shards
from seed_asr.utils.checkpoints import run_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """stdout + stderr of ``args``, which must exit 0."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of what a clone of the checkout holds (so the build writes nothing here)."""
    source = tmp_path_factory.mktemp("source")
    listed = _run("git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if path.is_symlink() or path.is_file():  # seed_asr/conf stays a link; files deleted here are skipped
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name, follow_symlinks=False)
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(out), str(source))
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the wheel is installed into, without its dependencies."""
    target = tmp_path_factory.mktemp("site")
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
         str(wheel))
    return target


def run_installed(site: Path, cwd: Path, *args: str) -> str:
    """Output of ``python <args>`` run in the empty folder ``cwd`` with only ``site`` on ``PYTHONPATH``."""
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return _run(sys.executable, *args, cwd=cwd, env=env)


def test_wheel_holds_the_configs_and_word_lists(wheel: Path) -> None:
    conf = ROOT / "conf"  # the top-level folder that seed_asr/conf links to
    configs = {f"seed_asr/conf/{p.relative_to(conf).as_posix()}" for p in conf.rglob("*.yaml")}
    word_lists = {f"seed_asr/corpus/{p.name}" for p in (ROOT / "seed_asr" / "corpus").glob("*.txt")}
    assert configs and word_lists
    assert sorted((configs | word_lists) - set(zipfile.ZipFile(wheel).namelist())) == []


def test_the_installed_package_is_imported(site: Path, tmp_path: Path) -> None:
    imported = run_installed(site, tmp_path / "cwd", "-c", "import seed_asr; print(seed_asr.__file__)")
    assert Path(imported.strip()).is_relative_to(site)


def test_train_help_shows_the_config(site: Path, tmp_path: Path) -> None:
    shown = run_installed(site, tmp_path / "cwd", "-m", "seed_asr.cli", "train", "--help")
    assert "debug: tiny" in shown  # a config group, read from the installed conf/
    assert "\ntask_name: ${stage.name}\n" in shown  # the composed train.yaml


def test_debug_tiny_step_writes_a_checkpoint(site: Path, tmp_path: Path) -> None:
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    for seed, split in enumerate(("train", "dev", "test")):
        write_synthetic_shards(corpus / split, 1, 2, 0.5, 1.0, seed=seed)
    run_installed(site, tmp_path / "cwd", "-m", "seed_asr.cli", "train", "debug=tiny", "trainer.max_steps=1",
                  f"paths.corpus_dir={corpus}", "data.cmvn_path=null", f"hydra.run.dir={run}")
    assert run_checkpoint(run, "last").is_file()
