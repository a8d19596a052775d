"""Converts a GGUF model into a Hugging Face folder that vLLM's CPU build can serve.

vLLM 0.32 reads no GGUF itself (its in-tree GGUF loader is gone; the plugin is CUDA-only),
so the sandbox dequantizes the GGUF once with transformers' GGUF loader and saves
safetensors in ``--dtype`` (bfloat16 where the CPU has a fast bf16 path, else float32).

Run as a script with the vllm venv's python (transformers, torch, gguf, accelerate):
``python sandbox/_gguf_to_hf.py MODEL.gguf OUT_DIR --dtype bfloat16``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def convert(gguf: Path, out: Path, dtype: str) -> None:
    """Write ``gguf`` as a Hugging Face folder (config, tokenizer, safetensors) to ``out``."""
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=DTYPES[dtype])
    # The loader records the GGUF's quantization, but the weights it returns are already
    # dequantized: left in, vLLM would look for a GGUF quantizer it does not have.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in config:
        del config["quantization_config"]
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    args = parser.parse_args()
    convert(args.gguf, args.out, args.dtype)


if __name__ == "__main__":
    main()
