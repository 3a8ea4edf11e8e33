import pytest
import torch
import torch.nn.functional as F
from models_helpers import make_batch, tiny_speech_llm

from seed_asr.text import phonemes
from seed_asr.text.phonemes import BLANK, NUM_CLASSES, UNKNOWN, phoneme_ids


def test_ids_drop_stress_and_boundaries_and_map_unknown_symbols():
    a, b, eng, tone = phoneme_ids("a"), phoneme_ids("b"), phoneme_ids("ŋ"), phoneme_ids("5")
    assert phoneme_ids("ˈa.b-ˌŋ 5") == a + b + eng + tone
    assert len({*a, *b, *eng, *tone}) == 4 and not {*a, *b, *eng, *tone} & {BLANK, UNKNOWN}
    assert phoneme_ids("a今€") == a + [UNKNOWN, UNKNOWN]
    assert phoneme_ids("") == []


def test_every_symbol_of_the_blocks_has_its_own_label_below_num_classes():
    symbols = [chr(c) for c in range(0x250, 0x2B0)] + list("abcxyz0159æðøŋθχᵻː")
    ids = [i for s in symbols for i in phoneme_ids(s)]
    assert len(ids) == len(symbols) == len(set(ids))
    assert min(ids) == 2 and max(ids) < NUM_CLASSES


TEXTS = ["call anneliese", "今天天气很好"]
IPA = ["kˈɔːl ˈanəliːz", "tɕˈin1 tʰjˈɛn1 tʰjˈɛn1 tɕʰˈi5 xˈən2 xˈɑu2"]


def phoneme_batch():
    batch = make_batch(TEXTS, [90, 61])
    batch["keys"] = ["u0", "u1"]
    for meta, ipa in zip(batch["metas"], IPA, strict=True):
        meta["phonemes"] = ipa
    return batch


def test_phoneme_ctc_loss_matches_torch_ctc_on_the_record_phonemes():
    torch.manual_seed(0)
    model = tiny_speech_llm(ctc_weight=0.5, ctc_units="phonemes").eval()
    assert model.ctc_head.out_features == NUM_CLASSES
    batch = phoneme_batch()
    out = model(batch)
    enc = model.encoder(batch["feats"], batch["feat_lens"])
    targets = [phoneme_ids(p) for p in IPA]
    ref = F.ctc_loss(
        model.ctc_head(enc.hidden).log_softmax(-1).transpose(0, 1), torch.tensor(sum(targets, [])),
        enc.lens, torch.tensor([len(t) for t in targets]), blank=phonemes.BLANK, zero_infinity=True,
    )
    torch.testing.assert_close(out["ctc_loss"], ref)
    torch.testing.assert_close(out["loss"], out["ce_loss"] + 0.5 * ref)


def test_missing_phonemes_fail_in_training_naming_the_sample_and_are_skipped_in_evaluation():
    model = tiny_speech_llm(ctc_weight=0.5, ctc_units="phonemes")
    batch = phoneme_batch()
    del batch["metas"][1]["phonemes"]
    with pytest.raises(ValueError, match=r"u1.*ctc_units=tokens"):
        model.train()(batch)
    out = model.eval()(batch)
    assert "ctc_loss" not in out and out["loss"] is out["ce_loss"]


def test_ctc_is_skipped_when_head_and_encoder_are_frozen():
    model = tiny_speech_llm(ctc_weight=0.5, ctc_units="phonemes")
    batch = phoneme_batch()
    for module in (model.ctc_head, model.encoder):
        module.requires_grad_(False)
    out = model.train()(batch)
    assert "ctc_loss" not in out and out["loss"] is out["ce_loss"]
    model.encoder.requires_grad_(True)  # the loss reaches the encoder again
    assert "ctc_loss" in model(batch)


def test_bad_ctc_units_fail_at_construction():
    with pytest.raises(ValueError, match="ctc_units"):
        tiny_speech_llm(ctc_weight=0.5, ctc_units="letters")
