"""``seed-asr export --llm``: the Hugging Face folder reads back through ``AutoTokenizer`` /
``AutoModelForCausalLM`` to the checkpoint's token ids and greedy output (English and Mandarin), a
tokenizer that would not is refused before anything is written, a folder holding a model is not
overwritten unless asked, and the command's stdout carries only its own line. Checkpoints that name
classes by the modules they lived in before a move still load and export."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from seed_asr.artifacts.loading import load_speech_llm
from seed_asr.config import compose_config
from seed_asr.data.audio import encode_flac
from seed_asr.export import check_tokenizer_round_trip, export_checkpoint
from seed_asr.export import main as export_main
from seed_asr.models.llm import build_qwen2
from seed_asr.testing.launch import run_process
from seed_asr.testing.synthetic import synthetic_record, synthetic_wave
from seed_asr.text.tokenizer import load_tokenizer, train_tokenizer
from seed_asr.train import train
from seed_asr.utils.checkpoints import MOVED_MODULES, stored_config

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "call anna okonkwo, please!",
    "打电话给安娜。",
    "set a timer for 10 minutes",
    "今天天气很好，我们去北京",
]
PROBES = [
    "call anna",
    "Set a timer: 10 min (ok?)",
    "打电话给安娜",
    "今天天气很好，我们明天去北京。",
    "Zoë 世界",
]
TINY_QWEN2 = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)


def write_shard(path: Path, texts: list[str]) -> Path:
    """One webdataset shard of 1 s synthetic utterances with ``texts`` as transcripts."""
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(path)) as writer:
        for i, text in enumerate(texts):
            record = synthetic_record(f"u{i}", 1.0) | {"text": text}
            flac = encode_flac(synthetic_wave(rng, 1.0))
            writer.write({"__key__": f"u{i}", "flac": flac, "json": json.dumps(record).encode()})
    return path


def tiny_sft_run(folder: Path, texts: list[str]) -> Path:
    """``folder/sft``: 2 steps of the tiny model on fixed batches of ``texts`` (its char tokenizer too)."""
    shard = write_shard(folder / "shard-000000.tar", texts)
    overrides = [
        "stage=sft",
        "model=tiny",
        "trainer=cpu",
        "logger=csv",
        "callbacks.progress_bar=null",
        "data=fixed",
        f"data.train_shards={shard}",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.monitor=null",
    ]
    train(compose_config("train", overrides, folder / "sft"))
    return folder / "sft"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sft run whose tokenizer learnt English and Mandarin transcripts."""
    return tiny_sft_run(tmp_path_factory.mktemp("export"), TEXTS * 2)


def test_exported_llm_folder_reads_back_to_the_same_ids_and_greedy_output(run: Path, tmp_path: Path) -> None:
    out = export_checkpoint(run, tmp_path / "export", llm=True)
    reference = load_speech_llm(run).model
    ours = reference.tokenizer
    assert len(ours.encode("打电话给安娜", add_special_tokens=False)) == 6, "one token per seen character"
    auto = AutoTokenizer.from_pretrained(out / "llm", local_files_only=True)
    for tokenizer in (auto, load_tokenizer(str(out / "llm"))):
        for text in PROBES:
            for special in (False, True):
                assert tokenizer.encode(text, add_special_tokens=special) == ours.encode(
                    text, add_special_tokens=special
                ), (type(tokenizer).__name__, text)
            assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    llm = AutoModelForCausalLM.from_pretrained(out / "llm", local_files_only=True).eval()
    for text in ("call anna", "打电话给"):
        prompt = torch.tensor([auto.encode(text, add_special_tokens=False)])
        greedy = dict(max_new_tokens=8, do_sample=False, pad_token_id=auto.pad_token_id)
        exported = llm.generate(prompt, **greedy)
        expected = reference.llm.generate(prompt, **greedy)
        assert exported.tolist() == expected.tolist()
        assert auto.decode(exported[0]) == ours.decode(expected[0])


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_trained_tokenizers_survive_a_qwen2_folder(kind: str, tmp_path: Path) -> None:
    tokenizer = train_tokenizer(TEXTS * 3, vocab_size=400, kind=kind)
    llm = build_qwen2(tokenizer, **TINY_QWEN2)
    check_tokenizer_round_trip(llm, tokenizer)
    llm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    auto = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    for text in PROBES:
        assert auto.encode(text) == tokenizer.encode(text), text


def test_a_tokenizer_that_would_not_survive_is_refused_before_anything_is_written(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # characters with "▁" for spaces: transformers would load it beside a Qwen2 as a byte-level BPE
    vocab = {token: i for i, token in enumerate(["<|pad|>", "<|endoftext|>", "▁", *"acln"])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Replace("▁", " ")
    spaced = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|pad|>", eos_token="<|endoftext|>")
    with pytest.raises(ValueError, match="would not survive"):
        check_tokenizer_round_trip(build_qwen2(spaced, **TINY_QWEN2), spaced)

    def refuse(*args: object) -> None:
        raise ValueError("would not survive")

    monkeypatch.setattr("seed_asr.export.check_tokenizer_round_trip", refuse)
    with pytest.raises(ValueError, match="would not survive"):
        export_checkpoint(run, tmp_path / "export", llm=True)
    assert not (tmp_path / "export").exists()


def test_a_folder_holding_a_model_is_refused_unless_overwrite(run: Path, tmp_path: Path) -> None:
    out = export_checkpoint(run, tmp_path / "export", llm=True)
    (out / "notes.txt").write_text("kept")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_checkpoint(run, out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before, "nothing was touched"
    export_checkpoint(run, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "cmvn.json", "config.yaml", "model.safetensors", "notes.txt", "tokenizer"
    ], "the earlier export's llm/ is gone, other files are kept"  # fmt: skip


def test_the_command_prints_only_its_own_line_on_stdout(run: Path, tmp_path: Path) -> None:
    """In a fresh process, where DeepSpeed (imported while the LLM is built) logs to stdout on CPUs."""
    out = tmp_path / "export"
    cmd = [sys.executable, "-m", "seed_asr.cli", "export", str(run), str(out), "--llm"]
    proc = run_process(cmd, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == f"exported {run} -> {out}\n"
    with pytest.raises(SystemExit, match="not empty.*--overwrite"):
        export_main([str(run), str(out)])


def test_a_checkpoint_naming_classes_by_old_modules_loads_and_exports(run: Path, tmp_path: Path) -> None:
    """Checkpoints written before a module moved (``MOVED_MODULES``) keep loading, through every reader."""
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    cfg = state["hyper_parameters"]["cfg"]
    assert cfg["model"]["prompt"]["_target_"] == "seed_asr.text.prompts.PromptBuilder"
    cfg["model"]["prompt"]["_target_"] = "seed_asr.data.prompts.PromptBuilder"
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    loaded = load_speech_llm(old)
    assert loaded.cfg.model.prompt._target_ == "seed_asr.text.prompts.PromptBuilder"
    reference = load_speech_llm(run).model
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert (export_checkpoint(old, tmp_path / "export") / "model.safetensors").exists()


def test_moved_modules_name_old_paths_that_are_gone_and_new_ones_that_import() -> None:
    for old, new in MOVED_MODULES.items():
        assert importlib.util.find_spec(old) is None, old
        importlib.import_module(new)
    cfg = stored_config({"a": [{"_target_": "seed_asr.data.text.CharTokenizer", "x": 1}],
                         "b": {"_target_": "seed_asr.models.llm.build_qwen2"}})
    assert cfg.a[0]._target_ == "seed_asr.text.tokenizer.CharTokenizer" and cfg.a[0].x == 1
    assert cfg.b._target_ == "seed_asr.models.llm.build_qwen2"


def test_a_prompt_stored_before_chat_templates_keeps_its_own_template() -> None:
    """A model trained with `template` must hear the same prompt after reload, even when its tokenizer
    has a chat template (which `chat_template: auto` would otherwise take)."""
    assert stored_config({"model": {"prompt": {"template": "{audio}"}}}).model.prompt.chat_template == "never"
    kept = {"model": {"prompt": {"template": "{audio}", "chat_template": "auto"}}}
    assert stored_config(kept).model.prompt.chat_template == "auto"
