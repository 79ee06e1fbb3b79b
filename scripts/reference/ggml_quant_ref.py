"""Encodes f32 values with ggml's own reference quantizers (quantize_row_<type>_ref in
libggml-base.so, the library llama.cpp links; node-llama-cpp ships one), for comparing sft's
quantizers with ggml's byte for byte.

    python ggml_quant_ref.py LIBGGML_BASE_SO TYPE IN.f32 OUT.bin

TYPE: q8_0, q5_0, q4_K or q6_K. IN.f32 holds raw little-endian f32, a whole number of blocks.
"""
import ctypes
import sys

import numpy as np

BLOCK = {"q8_0": (32, 34), "q5_0": (32, 22), "q4_K": (256, 144), "q6_K": (256, 210)}


def main(lib: str, qtype: str, src: str, dst: str) -> None:
    values, nbytes = BLOCK[qtype]
    x = np.fromfile(src, dtype="<f4")
    if x.size % values:
        sys.exit(f"{src}: {x.size} values is not a whole number of {values}-value blocks")
    out = np.zeros(x.size // values * nbytes, dtype=np.uint8)
    fn = getattr(ctypes.CDLL(lib), f"quantize_row_{qtype}_ref")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    fn(x.ctypes.data, out.ctypes.data, x.size)
    out.tofile(dst)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: python ggml_quant_ref.py LIBGGML_BASE_SO TYPE IN.f32 OUT.bin")
    main(*sys.argv[1:])
