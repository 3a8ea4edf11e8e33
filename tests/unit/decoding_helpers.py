"""Tiny causal LMs and prefixes shared by the decoding tests (built from configs, no downloads)."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import Qwen2Config, Qwen2ForCausalLM


def tiny_qwen2(vocab: int = 97, hidden: int = 64, layers: int = 2, seed: int = 0) -> Qwen2ForCausalLM:
    """A random Qwen2 in eval mode, float32."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return Qwen2ForCausalLM(config).eval()


def boost_token(llm: Qwen2ForCausalLM, token: int, factor: float) -> None:
    """Scale one output row so that `token` (e.g. eos) is chosen often enough to end hypotheses early."""
    with torch.no_grad():
        llm.lm_head.weight[token] *= factor


def left_padded_prefix(valid_lengths: list[int], hidden: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random `(B, P, H)` embeddings (padding filled with noise too) and their left-padded `(B, P)` mask."""
    generator = torch.Generator().manual_seed(seed)
    width = max(valid_lengths)
    embeds = torch.randn(len(valid_lengths), width, hidden, generator=generator)
    mask = torch.zeros(len(valid_lengths), width, dtype=torch.long)
    for row, length in enumerate(valid_lengths):
        mask[row, width - length :] = 1
    return embeds, mask


def cut_at_eos(tokens: list[int], eos_id: int) -> list[int]:
    """Tokens before the first eos."""
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


@torch.no_grad()
def sequence_logprobs(llm: Qwen2ForCausalLM, prefix: Tensor, sequences: list[list[int]]) -> list[float]:
    """Plain reference: log P(tokens | prefix) of each sequence, from full forwards without a KV cache.

    Sequences are right padded into one batch (causal attention: padding after a position cannot
    change it), and the prefix has no padding.

    Args:
        prefix: `(P, H)` valid prefix embeddings of one utterance.
        sequences: continuations, eos included when it was generated.
    """
    width = max(len(seq) for seq in sequences)
    ids = torch.tensor([seq + [0] * (width - len(seq)) for seq in sequences], dtype=torch.long)
    embeds = torch.cat([prefix.expand(len(sequences), -1, -1), llm.get_input_embeddings()(ids)], dim=1)
    logp = llm(inputs_embeds=embeds).logits.float().log_softmax(-1)[:, prefix.shape[0] - 1 : -1]
    token_logp = logp.gather(2, ids[:, :, None]).squeeze(2)
    return [float(token_logp[row, : len(seq)].sum()) for row, seq in enumerate(sequences)]


def loop_model(eos_id: int, vocab: int = 16, hidden: int = 32) -> Qwen2ForCausalLM:
    """A Qwen2 whose next token is succ(current token): 2->3->4->2 loops, 6->6 loops, 9->eos, else ->2.

    Attention and MLP outputs are zeroed, so the last hidden state is the current token's embedding;
    embeddings are orthogonal with RMS 1 and the output rows map each token to its successor.
    """
    llm = tiny_qwen2(vocab=vocab, hidden=hidden, layers=1)
    succ = {t: 2 for t in range(vocab)} | {2: 3, 3: 4, 4: 2, 6: 6, 9: eos_id}
    with torch.no_grad():
        for layer in llm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        basis = torch.linalg.qr(torch.randn(hidden, hidden))[0][:vocab] * hidden**0.5
        llm.model.embed_tokens.weight.copy_(basis)
        llm.lm_head.weight.zero_()
        for token, nxt in succ.items():
            llm.lm_head.weight[nxt] += basis[token] / hidden * 10.0
    return llm


def token_prefix(llm: Qwen2ForCausalLM, last_tokens: list[int]) -> tuple[Tensor, Tensor]:
    """One-position prefixes holding the embeddings of `last_tokens`."""
    embeds = llm.get_input_embeddings()(torch.tensor(last_tokens))[:, None, :].detach()
    return embeds, torch.ones(len(last_tokens), 1, dtype=torch.long)
