"""A small stand-in for a user's pretrained LLM folder: a Llama with its own byte-level BPE tokenizer and a
chat template, trained a few steps on given texts and written by ``save_pretrained``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def write_pretrained_llm(folder: str | Path, texts: Sequence[str], steps: int = 20, seed: int = 0) -> Path:
    """Train a BPE tokenizer (320 tokens, every byte) and a 2-layer Llama (hidden 32) for ``steps`` AdamW
    steps on ``texts``; save both to ``folder`` and return it."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>", "<|user|>", "<|assistant|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       bos_token_id=bos, eos_token_id=eos))
    ids = [torch.tensor([bos, *tokenizer.encode(t), eos]) for t in texts]
    batch = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=eos)
    optimizer = torch.optim.AdamW(llm.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = llm(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    llm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
