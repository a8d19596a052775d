"""Writes a tiny random Qwen2 model with a trained byte-level BPE tokenizer.

Run as a script with the vLLM venv's python (it needs torch, transformers, tokenizers):
``python sandbox/_gen_tiny.py OUT_DIR``. Deterministic: fixed seed and fixed corpus.

Shape: hidden 128, 2 layers, 2 attention heads (head_dim 64, since vLLM's CPU attention
refuses head_dim 16), 1 KV head, tied embeddings, float32, and a wide MLP (see
INTERMEDIATE). The weights are random, so the text it writes is noise; it exists to
exercise the engines, not to answer well.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SEED = 0
# A wide MLP (13M parameters, 51 MB) gives each decode step real work. With a 512-wide MLP
# a step is pure Python overhead (~1 ms), so at concurrency 8 the API server and the
# client, not the engine, set the pace and the batching gain swung between 1.5x and 4.9x
# on a busy 2-core machine; with 16384 it stayed at 4.0-4.4x under a load of 14.
INTERMEDIATE = 16384
BPE_VOCAB = 768
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# The corpus covers the languages servescope's prompt sets use (Korean first: the seed
# comparison was Korean), so every script gets merged tokens, not only raw bytes.
CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Benchmark the serving engines side by side: latency, throughput and answers.",
    "Explain continuous batching in one paragraph.",
    "What is the capital of France? Paris is the capital of France.",
    "Write a haiku about autumn leaves falling on a quiet river.",
    '{"name": "servescope", "engines": ["ollama", "vllm", "llama.cpp"], "ok": true}',
    "def add(a, b):\n    return a + b\n",
    "안녕하세요. 오늘 날씨가 정말 좋네요.",
    "대한민국의 수도는 서울입니다. 서울은 큰 도시입니다.",
    "인공지능 모델의 응답 속도와 처리량을 비교합니다.",
    "한국어로 짧게 대답해 주세요.",
    "你好，世界。今天天气很好。",
    "中国的首都是北京。北京是一座历史悠久的城市。",
    "请用中文简要回答这个问题。",
    "こんにちは、世界。今日はいい天気ですね。",
    "日本の首都は東京です。東京は大きな都市です。",
    "日本語で短く答えてください。",
    "1 2 3 4 5 6 7 8 9 10 100 1000 3.14 2025-06-09",
)

# The pre-tokenizer split of Qwen2 (and llama.cpp's "qwen2" pre-tokenizer), so both
# engines cut text into the same pieces before byte-level BPE.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5's chat template without the tool-calling branches.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer() -> Tokenizer:
    """A byte-level BPE tokenizer trained on CORPUS, special tokens after the BPE vocab."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=1,
        # Every byte is in the vocabulary, so any text in any language tokenizes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(CORPUS) * 4, trainer=trainer)
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return tokenizer


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: vocabulary character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def silenced_tokens(tokenizer: Tokenizer) -> list[int]:
    """Tokens whose bytes are not whole UTF-8 text, and <|im_start|>.

    Their embedding rows are zeroed, so with tied embeddings their logit is always 0 while
    the best of the other, random logits is positive: greedy decoding never picks them.
    Why: llama-cpp-python 0.3.36 checks max_tokens only after a token completes a UTF-8
    character, so a random model that keeps emitting a lone lead byte runs past
    max_tokens until the context is full ("failed to find a memory slot"). It also keeps
    every answer valid text.
    """
    decoder = _byte_decoder()
    silenced = [tokenizer.token_to_id("<|im_start|>")]
    for token, token_id in tokenizer.get_vocab(with_added_tokens=False).items():
        try:
            bytes(decoder[c] for c in token).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            silenced.append(token_id)
    return sorted(silenced)


def build(out: Path) -> dict[str, object]:
    """Write config, weights, tokenizer and generation config into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    eot, im_end = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")

    torch.manual_seed(SEED)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=im_end,
        pad_token_id=eot,
    )
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    silenced = silenced_tokens(tokenizer)
    with torch.no_grad():
        model.model.embed_tokens.weight[silenced] = 0.0
    model.generation_config.eos_token_id = [im_end, eot]
    model.generation_config.pad_token_id = eot
    model.generation_config.bos_token_id = eot
    model.save_pretrained(out, safe_serialization=True)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    return {"vocab_size": vocab_size, "parameters": parameters, "silenced": len(silenced)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    info = build(parser.parse_args().out)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
