import pytest
from models_helpers import CORPUS, tiny_tokenizer

from seed_asr.text.prompts import PROMPT_MARKERS
from seed_asr.text.tokenizer import load_tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_round_trip_english_chinese_and_unseen_text(kind, tmp_path):
    tok = tiny_tokenizer(kind=kind, vocab_size=350)
    assert len(tok) <= 350
    for text in [*CORPUS, "unseen words: Zyx 世界 ü!"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        assert tok.unk_token_id not in ids
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.encode(CORPUS[4], add_special_tokens=False) == tok.encode(
        CORPUS[4], add_special_tokens=False
    )
    assert (loaded.pad_token, loaded.eos_token, loaded.bos_token) == (
        "<|pad|>",
        "<|endoftext|>",
        "<|endoftext|>",
    )


def test_char_kind_is_one_token_per_seen_character():
    tok = tiny_tokenizer(kind="char", vocab_size=400)
    ids = tok.encode("今天 call", add_special_tokens=False)
    assert [tok.decode(i) for i in ids] == ["今", "天", " ", "c", "a", "l", "l"]
    assert len(tok.encode("髒", add_special_tokens=False)) == 3, "an unseen character is its UTF-8 bytes"


def test_bpe_learns_merges():
    tok = tiny_tokenizer(kind="bpe", vocab_size=400)
    assert len(tok.tokenize("set a timer for ten minutes")) < len("set a timer for ten minutes") / 2


def test_prompt_markers_are_single_special_tokens():
    tok = tiny_tokenizer()
    for marker in PROMPT_MARKERS:
        ids = tok.encode(f"a{marker}b", add_special_tokens=False)
        assert len(ids) == 3 and tok.convert_ids_to_tokens(ids[1]) == marker
    assert tok.decode(tok.encode(f"a{PROMPT_MARKERS[0]}b"), skip_special_tokens=True) == "ab"


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer(CORPUS, vocab_size=400, kind="wordpiece")
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        load_tokenizer(str(tmp_path / "missing"))
