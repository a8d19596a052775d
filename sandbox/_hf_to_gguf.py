"""Writes a Hugging Face Qwen2 checkpoint as one float32 GGUF file for llama.cpp.

Run as a script with the vLLM venv's python (it has torch, safetensors and gguf):
``python sandbox/_hf_to_gguf.py HF_DIR OUT.gguf --name NAME``. The quantized variants are
made from this file by llama.cpp's own quantizer (``_quantize.py``).

Written with the ``gguf`` package rather than llama.cpp's convert_hf_to_gguf.py, which
rejects a BPE tokenizer whose pre-tokenizer it does not recognise by hash; this tokenizer
uses Qwen2's split, so the file declares the "qwen2" pre-tokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import load_file

ARCH = "qwen2"
SUPPORTED = ("Qwen2ForCausalLM",)

LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(hf_name: str) -> str:
    """The GGUF tensor name of a Hugging Face Qwen2 tensor name."""
    if hf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[hf_name]
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        suffix = ".".join(parts[3:])
        if suffix in LAYER_TENSORS:
            return f"blk.{parts[2]}.{LAYER_TENSORS[suffix]}"
    raise SystemExit(f"unexpected tensor {hf_name!r} for {ARCH}")


def load_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(hf_dir.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    if not tensors:
        raise SystemExit(f"no *.safetensors in {hf_dir}")
    return tensors


def chat_template(hf_dir: Path, tokenizer_config: dict) -> str | None:
    jinja = hf_dir / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    template = tokenizer_config.get("chat_template")
    return template if isinstance(template, str) else None


def vocab(hf_dir: Path, n_vocab: int) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """Token list, token types and merges from tokenizer.json, padded to ``n_vocab``."""
    data = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE":
        raise SystemExit("only byte-level BPE tokenizers are supported")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(n_vocab):
        if i in added:
            tokens.append(added[i]["content"])
            special = added[i].get("special", False)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:  # checkpoints pad the embedding past the tokenizer (Qwen2.5: 151936 rows)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    ids = {t: i for i, t in enumerate(tokens)}
    return tokens, [int(t) for t in types], merges, ids


def convert(hf_dir: Path, out: Path, name: str) -> None:
    """Write ``hf_dir`` as a float32 GGUF file at ``out``."""
    config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or ["?"])[0]
    if arch not in SUPPORTED:
        raise SystemExit(f"cannot convert {arch} to GGUF (supported: {', '.join(SUPPORTED)})")
    tok_config_file = hf_dir / "tokenizer_config.json"
    tok_config = json.loads(tok_config_file.read_text("utf-8")) if tok_config_file.exists() else {}
    rope = config.get("rope_parameters") or {}
    rope_theta = config.get("rope_theta") or rope.get("rope_theta") or 1_000_000.0
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    tensors = load_tensors(hf_dir)
    n_vocab = tensors["model.embed_tokens.weight"].shape[0]
    tokens, types, merges, ids = vocab(hf_dir, n_vocab)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    writer.add_name(name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    head_dim = config.get("head_dim") or hidden // heads
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    eos = tok_config.get("eos_token") or "<|im_end|>"
    eos = eos["content"] if isinstance(eos, dict) else eos
    if eos in ids:
        writer.add_eos_token_id(ids[eos])
    if "<|endoftext|>" in ids:
        writer.add_bos_token_id(ids["<|endoftext|>"])
        writer.add_pad_token_id(ids["<|endoftext|>"])
    writer.add_add_bos_token(False)
    template = chat_template(hf_dir, tok_config)
    if template:
        writer.add_chat_template(template)

    for hf_name, tensor in tensors.items():
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd when output.weight is absent
        writer.add_tensor(gguf_name(hf_name), tensor.to(torch.float32).numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("hf_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    try:
        convert(args.hf_dir, args.out, args.name)
    except (KeyError, ValueError, OSError) as exc:
        sys.exit(f"conversion failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
