from functools import partial

import pytest
import torch
from models_helpers import make_batch, take, tiny_speech_llm, tiny_tokenizer

from seed_asr.decoding.model import SpeechLM
from seed_asr.models.llm import apply_lora

TEXTS = ["call anneliese okonkwo", "今天天气很好", "play some music please"]
FRAMES = [90, 37, 61]
CONTEXTS = [{"history": "set a timer", "keywords": ["berlin", "okonkwo"]}, None, {"keywords": ["music"]}]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_speech_llm(tiny_tokenizer(), ctc_weight=0.3).eval()


def audio(model, batch):
    return model.encode_audio(batch["feats"], batch["feat_lens"])


def test_labels_cover_only_transcript_and_eos(model):
    batch = make_batch(TEXTS, FRAMES)
    embeds, lens, _ = audio(model, batch)
    inputs = model.build_inputs(embeds, lens, TEXTS, [None] * 3)
    table = model.llm.get_input_embeddings()
    for i, text in enumerate(TEXTS):
        p = model.prompt.build(None, text)
        n_pre, n_audio = len(p.before_audio), int(lens[i])
        n = n_pre + n_audio + len(p.after_audio) + len(p.target)
        assert inputs.attention_mask[i].tolist() == [1] * n + [0] * (inputs.attention_mask.shape[1] - n)
        labels = inputs.labels[i, :n].tolist()
        assert labels == [-100] * (n - len(p.target)) + p.target
        assert (inputs.labels[i, n:] == -100).all()
        torch.testing.assert_close(inputs.inputs_embeds[i, n_pre : n_pre + n_audio], embeds[i, :n_audio])
        ids = torch.tensor(p.before_audio)
        torch.testing.assert_close(inputs.inputs_embeds[i, :n_pre], table(ids))
        assert inputs.position_ids[i, :n].tolist() == list(range(n))


def test_decoding_prefix_is_left_padded_and_equals_the_training_prompt(model):
    batch = make_batch(TEXTS, FRAMES, CONTEXTS)
    embeds, lens, _ = audio(model, batch)
    train = model.build_inputs(embeds, lens, TEXTS, CONTEXTS)
    prefix, mask, caps = model.prefix(batch, use_context=True)
    assert torch.equal(caps, model.max_new_tokens(lens))
    marker = model.llm.get_input_embeddings()(torch.tensor(model.prompt.encode("<|transcript|>")))
    for i in range(3):
        n = int(mask[i].sum())
        assert mask[i].tolist() == [0] * (mask.shape[1] - n) + [1] * n
        torch.testing.assert_close(prefix[i, -1], marker[-1])
        torch.testing.assert_close(prefix[i, -n:], train.inputs_embeds[i, :n])
        assert train.labels[i, n] != -100 and (train.labels[i, :n] == -100).all()


def test_prefix_next_token_logits_do_not_depend_on_padding(model):
    batch = make_batch(TEXTS, FRAMES, CONTEXTS)
    prefix, mask, _ = model.prefix(batch, use_context=True)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model.llm(inputs_embeds=prefix, attention_mask=mask, position_ids=positions).logits[:, -1]
    for i in range(3):
        p1, m1, _ = model.prefix(take(batch, i), use_context=True)
        alone = model.llm(inputs_embeds=p1, attention_mask=m1).logits[0, -1]
        torch.testing.assert_close(logits[i], alone, atol=1e-4, rtol=1e-4)


def test_cross_entropy_equals_hugging_face_loss_and_ctc_is_added(model):
    batch = make_batch(TEXTS, FRAMES, CONTEXTS)
    out = model(batch, use_context=True)
    embeds, lens, _ = audio(model, batch)
    inputs = model.build_inputs(embeds, lens, TEXTS, CONTEXTS)
    ref = model.llm(
        inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask, labels=inputs.labels
    ).loss
    torch.testing.assert_close(out["ce_loss"], ref, atol=1e-5, rtol=1e-5)
    assert out["n_tokens"] == sum(len(model.prompt.build(None, t).target) for t in TEXTS)
    assert torch.isfinite(out["ctc_loss"]) and out["ctc_loss"] > 0
    torch.testing.assert_close(out["loss"], out["ce_loss"] + 0.3 * out["ctc_loss"])
    with_context = model(batch, use_context=True)["ce_loss"]
    assert not torch.isclose(with_context, model(batch, use_context=False)["ce_loss"])


def test_score_equals_a_hand_computed_sum_of_log_softmax(model):
    batch = make_batch(TEXTS[:2], FRAMES[:2], CONTEXTS[:2])
    tok = model.tokenizer
    hyps = [
        [tok.encode(h, add_special_tokens=False) for h in pair]
        for pair in (("call", "call anne"), ("今天", "天气"))
    ]
    scores = model.score(batch, hyps, use_context=True)
    assert scores.shape == (2, 2) and scores.requires_grad
    table = model.llm.get_input_embeddings()
    for i in range(2):
        prefix, _, _ = model.prefix(take(batch, i), use_context=True)
        for j, hyp in enumerate(hyps[i]):
            target = hyp + [tok.eos_token_id]
            x = torch.cat([prefix, table(torch.tensor([target]))], dim=1)
            logp = model.llm(inputs_embeds=x).logits[0].log_softmax(-1)
            p = prefix.shape[1]
            expected = sum(logp[p - 1 + k, t] for k, t in enumerate(target))
            torch.testing.assert_close(scores[i, j], expected, atol=1e-4, rtol=1e-5)
    no_eos = model.score(batch, hyps, use_context=True, add_eos=False)
    assert (no_eos > scores).all()
    with pytest.raises(ValueError, match="same number"):
        model.score(batch, [hyps[0], hyps[1][:1]])


def test_max_new_tokens_follow_audio_duration(model):
    # 10 audio tokens x 2 frames x 4 x 10 ms = 0.8 s -> 16 tokens + margin 10.
    assert model.max_new_tokens(torch.tensor([10, 1])).tolist() == [26, 12]


def test_intermediate_encoder_layer_feeds_the_converter():
    torch.manual_seed(0)
    model = tiny_speech_llm(encoder_layer=0).eval()
    batch = make_batch(TEXTS[:2], FRAMES[:2])
    embeds, lens, enc = audio(model, batch)
    ref, _ = model.converter(enc.hidden_states[0], enc.lens)
    torch.testing.assert_close(embeds, ref)
    assert not torch.allclose(model.converter(enc.hidden, enc.lens)[0], ref)
    with pytest.raises(ValueError, match="encoder_layer=5"):
        tiny_speech_llm(encoder_layer=5).encode_audio(batch["feats"], batch["feat_lens"])


def test_lora_trains_only_adapters_in_the_llm():
    torch.manual_seed(0)
    model = tiny_speech_llm(lora=partial(apply_lora, r=4, alpha=8, dropout=0.0))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    llm_trainable = {n for n in trainable if n.startswith("llm.")}
    assert llm_trainable and all("lora_" in n for n in llm_trainable)
    assert any(n.startswith("encoder.") for n in trainable) and any(
        n.startswith("converter.") for n in trainable
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("llm.")}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(make_batch(TEXTS, FRAMES))["loss"].backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)  # lora_B starts at 0, so lora_B moves first


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = tiny_speech_llm(ctc_weight=0.3).train()
    batch = make_batch(TEXTS[:2], [40, 30])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["ce_loss"].item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]


def test_the_speech_llm_offers_everything_decoding_drives() -> None:
    """SpeechLLM implements the decoding Protocol: every attribute and method it names."""
    model = tiny_speech_llm()
    wanted = {name for name in dir(SpeechLM) if not name.startswith("_")} | set(SpeechLM.__annotations__)
    assert sorted(name for name in wanted if not hasattr(model, name)) == []
    assert {"base_llm", "prefix", "decoding_prefix", "encode_audio", "tokenizer", "prompt"} <= wanted
