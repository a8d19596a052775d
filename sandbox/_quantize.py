"""Quantizes a GGUF file with llama.cpp's own quantizer (through llama-cpp-python).

Run as a script with the llama venv's python:
``python sandbox/_quantize.py IN.gguf OUT.gguf TYPE [--allow-requantize]`` where TYPE is
f16, q8_0, q4_0, ... ``--allow-requantize`` lets an already quantized GGUF (the real
model's Q4_K_M) be the source.
"""

from __future__ import annotations

import argparse
import ctypes
import sys

import llama_cpp

# llama.h's llama_ftype values for the variants the sandbox serves.
FTYPES = {
    "f32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0,
    "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
}


def quantize(src: str, dst: str, kind: str, allow_requantize: bool = False) -> None:
    """Write ``src`` quantized to ``kind`` at ``dst``; exits non-zero on failure."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.allow_requantize = allow_requantize
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize({kind}) returned {rc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("kind", choices=sorted(FTYPES))
    parser.add_argument("--allow-requantize", action="store_true")
    args = parser.parse_args()
    quantize(args.src, args.dst, args.kind, args.allow_requantize)


if __name__ == "__main__":
    main()
