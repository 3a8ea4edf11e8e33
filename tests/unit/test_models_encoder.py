import pytest
import torch
from models_helpers import tiny_encoder
from transformers import WhisperConfig, WhisperModel

from seed_asr.models.encoder import ConformerEncoder
from seed_asr.models.hf_encoder import HFEncoder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_output_lengths_match_the_subsampling_convolutions():
    enc = tiny_encoder().eval()
    for length in (7, 8, 9, 10, 11, 50, 101):
        # Formula of a 3x3 stride-2 unpadded conv, applied twice: floor((L - 3) / 2) + 1.
        expected = ((length - 3) // 2 + 1 - 3) // 2 + 1
        out = enc(torch.randn(1, length, 80), torch.tensor([length]))
        assert out.hidden.shape == (1, expected, 32)
        assert ConformerEncoder.output_lengths(torch.tensor([length])).item() == expected == out.lens.item()


@pytest.mark.parametrize("block", ["conformer", "transformer"])
def test_padding_does_not_change_a_samples_output(block):
    torch.manual_seed(0)
    enc = tiny_encoder(block=block).eval()
    feats = torch.randn(3, 60, 80) * 5  # junk beyond each length must not matter
    lens = torch.tensor([60, 23, 41])
    out = enc(feats, lens, output_hidden_states=True)
    assert out.hidden.shape == (3, 14, 32) and out.lens.tolist() == [14, 5, 9]
    for i, n in enumerate(lens.tolist()):
        alone = enc(feats[i : i + 1, :n], lens[i : i + 1], output_hidden_states=True)
        t = int(alone.lens)
        torch.testing.assert_close(out.hidden[i, :t], alone.hidden[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            out.hidden_states[0][i, :t], alone.hidden_states[0][0], atol=1e-5, rtol=1e-5
        )


def test_hidden_states_are_block_outputs():
    enc = tiny_encoder(num_layers=3).eval()
    feats, lens = torch.randn(2, 40, 80), torch.tensor([40, 30])
    out = enc(feats, lens, output_hidden_states=True)
    assert len(out.hidden_states) == 3
    assert torch.equal(out.hidden_states[-1], out.hidden)
    assert enc(feats, lens).hidden_states is None
    x = enc.subsample(feats.masked_fill(torch.arange(40)[None, :, None] >= lens[:, None, None], 0.0))
    valid = torch.arange(x.shape[1])[None] < out.lens[:, None]
    torch.testing.assert_close(enc.blocks[0](x, valid), out.hidden_states[0])


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = tiny_encoder().train()
    ckpt = tiny_encoder(activation_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    feats, lens = torch.randn(2, 30, 80), torch.tensor([30, 20])
    grads = []
    for enc in (plain, ckpt):
        enc(feats, lens).hidden.square().sum().backward()
        grads.append(enc.blocks[0].attn.qkv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_bad_inputs_are_named():
    enc = tiny_encoder()
    with pytest.raises(ValueError, match="feats must be"):
        enc(torch.randn(2, 30, 40), torch.tensor([30, 30]))
    with pytest.raises(ValueError, match="feat_lens"):
        enc(torch.randn(2, 30, 80), torch.tensor([31, 30]))
    with pytest.raises(ValueError, match="feat_lens"):
        enc(torch.randn(2, 30, 80), torch.tensor([3, 30]))
    with pytest.raises(ValueError, match="heads"):
        ConformerEncoder(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="block must be one of .*'lstm'"):
        ConformerEncoder(block="lstm")


def test_transformer_blocks_are_attention_then_feed_forward():
    torch.manual_seed(0)
    enc = tiny_encoder(block="transformer").eval()
    assert not any("conv" in name for name, _ in enc.blocks.named_parameters())
    x, valid = torch.randn(2, 9, 32), torch.arange(9)[None] < torch.tensor([[9], [6]])
    block = enc.blocks[0]
    # Reference written with torch's own attention on the rotated heads: softmax(q k^T / sqrt(d)) v.
    q, k, v = block.attn.qkv(block.attn.norm(x)).view(2, 9, 3, 4, 8).unbind(2)
    angles = torch.arange(9.0)[:, None] * 10000 ** (-torch.arange(0, 8, 2) / 8)[None]
    rot = lambda z: torch.cat((z[..., :4] * angles.cos() - z[..., 4:] * angles.sin(),  # noqa: E731
                               z[..., :4] * angles.sin() + z[..., 4:] * angles.cos()), -1)  # fmt: skip
    q, k, v = rot(q.transpose(1, 2)), rot(k.transpose(1, 2)), v.transpose(1, 2)
    scores = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~valid[:, None, None, :], float("-inf"))
    h = x + block.attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 9, 32))
    expected = torch.nn.functional.layer_norm(h + block.ff(h), (32,), block.norm.weight, block.norm.bias)
    torch.testing.assert_close(block(x, valid), expected, atol=1e-5, rtol=1e-5)


def test_hf_whisper_encoder_from_a_local_folder(tmp_path):
    config = WhisperConfig(
        num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, max_source_positions=50,
        vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    whisper = WhisperModel(config).eval()
    whisper.save_pretrained(tmp_path)
    enc = HFEncoder(str(tmp_path)).eval()
    assert enc.d_model == 32
    feats, lens = torch.randn(2, 70, 80), torch.tensor([70, 41])
    out = enc(feats, lens, output_hidden_states=True)
    assert out.lens.tolist() == [35, 21] and out.hidden.shape == (2, 35, 32)
    assert len(out.hidden_states) == 2 and torch.equal(out.hidden_states[-1], out.hidden)
    # Reference: the Whisper encoder on the zero-padded 100-frame input, called directly.
    padded = torch.zeros(2, 100, 80)
    padded[0, :70], padded[1, :41] = feats[0], feats[1, :41]
    ref = whisper.get_encoder()(input_features=padded.transpose(1, 2)).last_hidden_state
    torch.testing.assert_close(out.hidden, ref[:, :35])
    with pytest.raises(ValueError, match="at most 100"):
        enc(torch.randn(1, 120, 80), torch.tensor([120]))
