"""Every shell command of README.md, slurm/README.md and docs/*.md is checked, so that a wrong key, a
removed option or a missing script in a doc fails a test.

Commands are the lines of ``bash`` code blocks and the inline code spans that start with a program.
Templates stand for each of their concrete commands: ``<a|b>`` and ``key=a|b`` alternatives,
``<name>`` placeholders (``PLACEHOLDERS``), ``[optional]`` parts included, ``...`` dropped. Checks:

- ``seed-asr <verb>`` / ``python -m seed_asr.<verb>`` / ``srun python -m ...``: Hydra verbs compose
  (``--cfg job``, in-process; a ``-m`` sweep: every combination of its values); argparse verbs list each
  flag in ``--help``;
- ``sbatch <template> ...``: the template and ``slurm/srun_train.sh`` run with a stub ``srun`` that adds
  ``--cfg job`` to the training command;
- ``make <target>``: ``make -n``; ``python scripts/<x>.py``: runs (GPU benchmarks: ``--help`` lists
  each flag);
- the ``corpus`` and ``shards`` commands run for real on tiny settings, and the README's training chain
  (``debug=tiny``) with eval, quantize, transcribe and export on its result runs too (slow);
- commands of other tools are listed in ``NOT_RUN`` with the reason.

A command that none of these covers fails ``test_doc_command_is_checked``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from seed_asr import cli
from seed_asr.cli import VERBS
from seed_asr.config import compose_config
from seed_asr.testing.launch import run_process
from seed_asr.testing.pretrained import write_pretrained_llm

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "slurm" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent  # the environment's seed-asr and python
HYDRA_VERBS = ("corpus", "shards", "train", "eval", "quantize", "demo")
ARGPARSE_VERBS = ("transcribe", "export")
NOT_RUN = {
    "pip": "installs packages from the package index",
    "venv": "`python -m venv` creates an environment",
    "wandb": "talks to wandb.ai (sync, login)",
    "scancel": "signals a running Slurm job",
    "mkdir": "creates the folder of sbatch's logs",
    "export": "sets the environment of the commands after it, which they are given here",
    ".": "activates an environment",
}
FRAGMENTS = {"sbatch --signal=USR1@300": "an sbatch option added to the templates' submission"}
PROGRAMS = {"seed-asr", "python", "srun", "sbatch", "make", *NOT_RUN}
GPU_SCRIPTS = {"scripts/bench_kernels.py"}  # time GPU kernels: their --help lists each flag
RUN = "runs/sft"  # the run folder the README's training chain ends with
PRETRAINED_LLM = "models/my-llm"  # the local LLM folder of the README's pretrained-LLM command
PLACEHOLDERS = {
    "verb": list(VERBS), "run": [RUN], "run or .ckpt": [RUN], "float ckpt": [RUN], "ckpt": [RUN],
    "out": ["exported"], "name": ["w2g64"],
}
ENV_DEFAULTS = {"STAGE": "sft"}
TINY = {  # appended to the commands that run for real
    "corpus": ["num_utterances=16", "num_workers=1", "cmvn_utterances=8"],
    "shards": ["num_workers=1", "cmvn_utterances=2"],
    "train": ["debug=tiny"],
    "quantize": ["quant=w2_per_channel"],  # the tiny model's widths are not multiples of 64
}
CliMain = Callable[[list[str]], tuple[int, str, str]]  # seed-asr <args> -> (exit code, stdout, stderr)
FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", re.S | re.M)


@dataclass(frozen=True)
class DocCommand:
    """One command of a doc, as written (continuation lines joined)."""

    where: str  # "README.md:104"
    text: str
    fenced: bool  # from a code block (else an inline code span)
    env: tuple[tuple[str, str], ...] = ()  # what `export` lines before it in its block set


def _program(words: list[str]) -> str:
    """The program a command runs ("venv" for ``python -m venv``), past ``NAME=value`` assignments."""
    words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)] or [""]
    name = Path(words[0]).name if "/" in words[0] else words[0]
    return "venv" if name == "python" and words[1:3] == ["-m", "venv"] else name


def _logical_lines(block: str) -> list[tuple[int, str]]:
    """(line offset, text) of each line of a code block, ``\\``-continued lines joined."""
    lines, start, pending = [], 0, ""
    for offset, line in enumerate(block.split("\n")):
        if not pending:
            start = offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    return lines


def doc_commands() -> list[DocCommand]:
    """Every command of the docs, in order, each distinct (text, environment) once."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], DocCommand] = {}
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        name = doc.relative_to(ROOT).as_posix()
        for fence in FENCE.finditer(text):
            if fence.group(1) not in {"bash", "sh", "shell"}:
                continue
            first, env = text.count("\n", 0, fence.start(2)) + 1, {}
            for offset, line in _logical_lines(fence.group(2)):
                for command in re.split(r"\s+&&\s+", re.sub(r"(^|\s)#\s.*$", "", line).strip()):
                    if command:
                        key = (" ".join(command.split()), tuple(env.items()))
                        found.setdefault(key, DocCommand(f"{name}:{first + offset}", key[0], True, key[1]))
                    if command.startswith("export "):
                        env.update(word.split("=", 1) for word in shlex.split(command)[1:])
        prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for span in re.finditer(r"`([^`]+)`", prose):
            command = " ".join(span.group(1).split())
            if _program(command.split()) in PROGRAMS and len(command.split()) > 1:
                line = prose.count("\n", 0, span.start()) + 1
                found.setdefault((command, ()), DocCommand(f"{name}:{line}", command, False))
    return list(found.values())


COMMANDS = doc_commands()


def expand(text: str, env: Mapping[str, str] = ENV_DEFAULTS) -> list[list[str]]:
    """The concrete commands (shell words) a doc command stands for (see the module docstring)."""
    text = text.replace("\\|", "|")
    text = re.sub(r"(^|\s)\[((?:-|[\w.]+=)[^\[\]]*)\]", r"\1\2", text)  # [--option ...], [key=...]
    text = re.sub(r"\$([A-Z_]+)\b", lambda m: env[m.group(1)], text)
    alternatives = re.search(r"<([^<>]+)>", text) or re.search(r"(?<==)([\w.-]+(?:\|[\w.-]+)+)", text)
    if alternatives:
        inner = alternatives.group(1)
        if "|" not in inner and inner not in PLACEHOLDERS:
            pytest.fail(f"placeholder <{inner}> of {text!r}: add it to PLACEHOLDERS")
        options = inner.split("|") if "|" in inner else PLACEHOLDERS[inner]
        head, tail = text[: alternatives.start()], text[alternatives.end():]
        return [c for o in options for c in expand(head + o + tail, env)]
    return [[w for w in shlex.split(text) if w != "..." and not w.endswith("=...")]]


def as_verb(words: list[str]) -> tuple[str, list[str]] | None:
    """``(verb, arguments)`` of ``seed-asr <verb> ...``, ``python -m seed_asr.<verb> ...``, ``srun ...``."""
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    if words[:1] == ["srun"]:
        words = list(itertools.dropwhile(lambda w: w.startswith("-"), words[1:]))
    if words[:1] == ["seed-asr"] and len(words) > 1:
        return words[1], words[2:]
    if len(words) > 2 and words[0] == "python" and words[1] == "-m" and words[2].startswith("seed_asr."):
        return words[2].removeprefix("seed_asr."), words[3:]
    return None


def kind(command: DocCommand) -> str:
    """How ``command`` is checked: verb, sbatch, make, script, or not run."""
    if command.text in FRAGMENTS:
        return "not run"
    words = command.text.split()
    program = _program(words)
    if program in NOT_RUN:
        return "not run"
    if as_verb(words) is not None:
        return "verb"
    if program == "sbatch" and any(w.endswith(".sbatch") for w in words):
        return "sbatch"
    if program == "make":
        return "make"
    if program == "python" and any(w.startswith("scripts/") for w in words):
        return "script"
    return "unclassified"


def test_the_docs_hold_the_commands_this_test_knows() -> None:
    """The extraction finds commands of each doc and kind (a broken extraction would check nothing)."""
    texts = {c.text for c in COMMANDS}
    shards = "seed-asr shards format=manifest input=/data/my_corpus/train.jsonl"
    assert f"{shards} out_dir=/shared/shards/my_corpus split=train" in texts
    assert any(c.text.startswith("seed-asr train stage=align hydra.run.dir=runs/align 'stage.init_from=")
               for c in COMMANDS)
    assert {kind(c) for c in COMMANDS} == {"verb", "sbatch", "make", "script", "not run"}
    assert {c.where.split(":")[0] for c in COMMANDS} >= {"README.md", "slurm/README.md", "docs/corpus.md"}
    assert set(VERBS) == {*HYDRA_VERBS, *ARGPARSE_VERBS}, "a new verb: say how its commands are checked"


@pytest.fixture
def cli_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliMain:
    """``seed-asr <args>`` in this process."""
    monkeypatch.setattr(sys, "argv", sys.argv[:])

    def call(args: list[str]) -> tuple[int, str, str]:
        code = 0
        try:
            cli.main(args)
        except SystemExit as exited:
            code = exited.code if isinstance(exited.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return call


def sweep_combinations(args: list[str]) -> list[list[str]]:
    """A ``-m`` command's runs: every combination of its sweep values (as Hydra's basic sweeper)."""
    if not {"-m", "--multirun"} & set(args):
        return [args]
    parser, choices = OverridesParser.create(), []
    for arg in (a for a in args if a not in {"-m", "--multirun"}):
        override = parser.parse_overrides([arg])[0]
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
        choices.append([f"{override.get_key_element()}={v}" for v in values] if values else [arg])
    return [list(c) for c in itertools.product(*choices)]


def check_hydra(verb: str, args: list[str], cli_main: CliMain) -> None:
    for run in sweep_combinations(args):
        code, out, err = cli_main([verb, *run, "--cfg", "job"])
        said = f"seed-asr {verb} {shlex.join(run)} does not compose:\n{err[-3000:]}"
        assert code == 0 and out.strip(), said


def check_flags(usage: str, words: list[str]) -> None:
    for flag in (w.split("=")[0] for w in words if w.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", usage), f"{flag} is not an option:\n{usage}"


def run_sbatch(words: list[str], env: Mapping[str, str], bin_dir: Path) -> None:
    """The sbatch template and srun_train.sh, with a stub srun that composes the training command."""
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@" --cfg job\n')
    srun.chmod(0o755)
    script = next(w for w in words if w.endswith(".sbatch"))
    assignments = dict(w.split("=", 1) for w in words[: words.index("sbatch")])
    slurm = {"SLURM_JOB_ID": "1234", "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS_PER_NODE": "1",
             "SLURM_JOB_NODELIST": "node1"}
    full_env = {**os.environ, **env, **assignments, **slurm, "PYTHON": sys.executable,
                "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}:{BIN}:{os.environ['PATH']}"}
    done = run_process(["bash", script, *words[words.index(script) + 1:]], timeout=300, env=full_env,
                       cwd=ROOT)
    assert done.returncode == 0, f"{shlex.join(words)}:\n{done.stderr[-3000:]}"
    assert "stage:" in done.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where} {c.text[:60]}" for c in COMMANDS])
def test_doc_command_is_checked(command: DocCommand, cli_main: CliMain, tmp_path: Path) -> None:
    how = kind(command)
    if how == "not run":
        return
    assert how in {"verb", "sbatch", "make", "script"}, f"{command}: {how}; add a check"
    for words in expand(command.text, {**ENV_DEFAULTS, **dict(command.env)}):
        if how == "verb":
            verb, args = as_verb(words)
            assert verb in VERBS, f"{command}: no verb {verb!r}"
            if verb in HYDRA_VERBS:
                check_hydra(verb, args, cli_main)
            else:
                code, usage, _ = cli_main([verb, "--help"])
                assert code == 0
                check_flags(usage, args)
        elif how == "sbatch":
            run_sbatch(words, dict(command.env), tmp_path)
        elif how == "make":
            done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        else:
            script = next(w for w in words if w.startswith("scripts/"))
            args = words[words.index(script) + 1:]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, script, *(["--help"] if script in GPU_SCRIPTS else args)],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            if script in GPU_SCRIPTS:
                check_flags(done.stdout, args)


# --- the commands that run for real -------------------------------------------------------------------

def rebase(word: str, root: Path) -> str:
    """Absolute paths of a doc (/data/..., /shared/...) moved under ``root``."""
    return re.sub(r"(^|[=\[,'\"])/(?=\w)", lambda m: f"{m.group(1)}{root}/", word)


def run(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    done = run_process(words, timeout=900, env=env, cwd=cwd)
    assert done.returncode == 0, f"{shlex.join(words)} in {cwd}:\n{done.stderr[-4000:]}"
    return done


def runs_of(verbs: tuple[str, ...], commands: list[DocCommand]) -> list[tuple[str, list[str]]]:
    """(verb, words) of each distinct command of ``verbs`` (its first concrete form), made tiny."""
    found: dict[tuple[str, ...], str] = {}
    for command in (c for c in commands if kind(c) == "verb"):
        words = expand(command.text)[0]
        verb = (as_verb(words) or ("", []))[0]
        if verb in verbs:
            words = [*words, *TINY.get(verb, [])]
            found.setdefault(tuple(words), verb)
    return [(verb, list(words)) for words, verb in found.items()]


def write_audio(path: Path, seconds: float, pitch: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * pitch * t) * np.hanning(t.size), 16000)


def write_inputs(cfg: DictConfig, cwd: Path) -> int:
    """A manifest or a LibriSpeech folder of 3 utterances at the shards command's ``input``; returns 3."""
    source = cwd / cfg.input
    if cfg.format == "librispeech":
        chapter = source / "84" / "121123"
        for i in range(3):
            write_audio(chapter / f"84-121123-{i:04d}.flac", 1.0, 200 + 50 * i)
        (chapter / "84-121123.trans.txt").write_text("".join(f"84-121123-{i:04d} HELLO NUMBER {i}\n"
                                                            for i in range(3)))
    else:
        for i in range(3):
            write_audio(source.parent / "audio" / f"u{i}.wav", 1.0, 200 + 50 * i)
        lines = [{"audio_filepath": f"audio/u{i}.wav", "text": f"hello {i}"} for i in range(3)]
        source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return 3


def shard_samples(folder: Path) -> int:
    total = 0
    for shard in folder.glob("*.tar"):
        with tarfile.open(shard) as tar:
            total += sum(m.name.endswith(".json") for m in tar.getmembers())
    return total


def test_corpus_and_shards_commands_run(tmp_path: Path) -> None:
    """Each distinct corpus and shards command of the docs, on tiny settings (each in a folder of its
    own, as a user runs one of them), writes every sample."""
    ran = runs_of(("corpus", "shards"), COMMANDS)
    assert {verb for verb, _ in ran} == {"corpus", "shards"}
    for i, (verb, words) in enumerate(ran):
        cwd = tmp_path / str(i)
        cwd.mkdir()
        words = [rebase(w, cwd / "root") for w in words]
        cfg = compose_config(verb, as_verb(words)[1])
        expected = write_inputs(cfg, cwd) if verb == "shards" else cfg.num_utterances
        run(words, cwd)
        out = cwd / cfg.out_dir
        if verb == "corpus":
            assert json.loads((out / "stats.json").read_text())["utterances"] == expected
            assert sum(shard_samples(split) for split in out.iterdir() if split.is_dir()) == expected
        else:
            assert shard_samples(out / cfg.split) == expected, shlex.join(words)


@pytest.mark.slow
def test_readme_training_chain_and_the_commands_that_take_its_run(tmp_path: Path) -> None:
    """README: the corpus, its training commands in order (debug=tiny; runs/sft is resumed; a stand-in
    pretrained LLM is in its folder), then eval, quantize, transcribe and export of the commands table on
    runs/sft."""
    readme = [c for c in COMMANDS if c.where.startswith("README.md:")]
    corpus = next(words for _, words in runs_of(("corpus",), readme) if "out_dir=data/corpus" in words)
    run([*corpus, "num_utterances=160"], tmp_path)  # the lm stage: 2 batches of 64 transcripts
    write_pretrained_llm(tmp_path / PRETRAINED_LLM, ["call anna now", "打电话给安娜"], steps=2)
    for _, words in runs_of(("train",), [c for c in readme if c.fenced]):
        run(words, tmp_path)
    starts = [json.loads(line) for line in (tmp_path / RUN / "starts.jsonl").read_text().splitlines()]
    assert starts[-1]["resumed_from"] == str(tmp_path / RUN / "checkpoints" / "last.ckpt")
    for name in ("a.wav", "b.flac"):
        write_audio(tmp_path / name, 1.5, 220)
    table = [c for c in readme if not c.fenced and "<" in c.text]  # the commands table's templates
    takers = runs_of(("eval", "quantize", "transcribe", "export"), table)
    assert sorted(verb for verb, _ in takers) == ["eval", "export", "quantize", "transcribe"]
    for _, words in takers:
        run(words, tmp_path)
    assert (tmp_path / "exported" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "text",
    [
        "seed-asr shards format=manifest manifest=/data/a.jsonl out_dir=/shards split=train",  # a wrong key
        "seed-asr train stage=<sft|no_such_stage>",  # a removed option in a template's alternatives
        "seed-asr export <ckpt> <out> --no-such-flag",  # a removed argparse option
        "STAGE=lm sbatch slurm/train_single_node.sbatch no_such_key=1",  # a wrong key past an sbatch template
        "make no-such-target",
        "python scripts/no_such_script.py",
        "seed-asr no-such-verb",
        "rsync -a a b",  # a program the test does not know
    ],
)
def test_a_wrong_doc_command_fails(text: str, cli_main: CliMain, tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        test_doc_command_is_checked(DocCommand("doc.md:1", text, True), cli_main, tmp_path)
