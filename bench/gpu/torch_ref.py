#!/usr/bin/env python3
"""PyTorch reference timings for the shapes `sft_cuda_tests --bench` measures (bench/gpu/README.md).

Causal attention (scaled_dot_product_attention, whichever backend PyTorch picks, and FlashAttention
when it can be forced) forward and forward+backward over 16384 tokens at sequence lengths 512,
1024 and 2048 with 32 heads of 128, plus GQA 4:1 and head_dim 64 at 2048 and fp32 at 512; q/k/v
are column blocks of one fused [tokens, (nh + 2 nkv) hd] tensor, as in sft. Then bf16 GEMMs at
the benchmark's shapes. FLOPs are counted as in bench_kernels.cu (causal: half the square;
backward = 2.5x forward).

Runs on the GPU machines' image (PyTorch with CUDA); needs nothing else. Usage:
    python3 bench/gpu/torch_ref.py [--json FILE] [--tokens N] [--quick]
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, min_ms=200.0):
    """Mean milliseconds of fn: one warm-up call, then enough calls for ~min_ms (3..50)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    one = start.elapsed_time(end)
    iters = max(3, min(50, int(min_ms / max(one, 0.01))))
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


results = []


def record(name, shape, ms, flops=0.0):
    tflops = flops / ms / 1e9 if flops else 0.0
    results.append({"name": name, "shape": shape, "ms": round(ms, 4), "tflops": round(tflops, 3)})
    print(f"{name:<42} {shape:<40} {ms:9.3f} ms" + (f"  {tflops:7.2f} TFLOP/s" if flops else ""), flush=True)


def sdpa_backends():
    """(label, context manager factory) pairs: PyTorch's own choice, then FlashAttention forced."""
    out = [("default", None)]
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        out.append(("flash", lambda: sdpa_kernel(SDPBackend.FLASH_ATTENTION)))
    except ImportError:
        pass
    return out


def bench_attention(tokens, T, nh, nkv, hd, dtype):
    B = max(1, tokens // T)
    qkv = torch.randn(B, T, nh + 2 * nkv, hd, device="cuda", dtype=dtype, requires_grad=True)
    dout = torch.randn(B, nh, T, hd, device="cuda", dtype=dtype)
    fwd_flops = 4.0 * B * nh * T * T * hd / 2
    shape = f"B {B} T {T} nh {nh} nkv {nkv} hd {hd}"
    tname = "bf16" if dtype == torch.bfloat16 else "fp32"

    def split():
        q = qkv[:, :, :nh].transpose(1, 2)
        k = qkv[:, :, nh : nh + nkv].transpose(1, 2)
        v = qkv[:, :, nh + nkv :].transpose(1, 2)
        return q, k, v

    def fwd():
        q, k, v = split()
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=nkv != nh)

    def fwd_bwd():
        q, k, v = split()
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=nkv != nh)
        o.backward(dout)
        qkv.grad = None

    for label, ctx in sdpa_backends():
        try:
            if ctx is None:
                tf, tfb = time_ms(fwd), time_ms(fwd_bwd)
            else:
                with ctx():
                    tf, tfb = time_ms(fwd), time_ms(fwd_bwd)
        except RuntimeError as e:  # e.g. flash has no fp32 kernel
            print(f"sdpa {label} {tname} {shape}: not available ({str(e).splitlines()[0][:100]})")
            continue
        record(f"torch sdpa[{label}] fwd {tname}", shape, tf, fwd_flops)
        record(f"torch sdpa[{label}] bwd {tname}", shape, tfb - tf, 2.5 * fwd_flops)
        record(f"torch sdpa[{label}] fwd+bwd {tname}", shape, tfb, 3.5 * fwd_flops)
    del qkv, dout
    torch.cuda.empty_cache()


def bench_gemm(M, H, I):
    # (name, ta, tb, M, N, K) exactly as bench_kernels.cu; C[m, n] = sum_k opA[m, k] opB[n, k].
    shapes = [
        ("gemm bf16 x W^T (q/o proj)", False, False, M, H, H),
        ("gemm bf16 x W^T (gate/up proj)", False, False, M, I, H),
        ("gemm bf16 dy W (down proj dx)", False, True, M, H, I),
        ("gemm bf16 dy^T x (weight grad)", True, True, H, H, M),
        ("gemm bf16 x A^T (LoRA r 16)", False, False, M, 16, H),
    ]
    for name, ta, tb, m, n, k in shapes:
        a = torch.randn((k, m) if ta else (m, k), device="cuda", dtype=torch.bfloat16)
        b = torch.randn((k, n) if tb else (n, k), device="cuda", dtype=torch.bfloat16)
        lhs = a.t() if ta else a
        rhs = b if tb else b.t()
        record("torch " + name, f"{m}x{n}x{k}", time_ms(lambda: torch.matmul(lhs, rhs)), 2.0 * m * n * k)
    n = min(H, 4096)
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    record("torch gemm fp32 (no TF32)", f"{n}x{n}x{n}", time_ms(lambda: a @ b.t()), 2.0 * n * n * n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: torch.cuda.is_available() is False")
        return 0
    tokens, heads, hd, seqs, H, I = args.tokens, 32, 128, [512, 1024, 2048], 4096, 11008
    if args.quick:
        tokens, heads, hd, seqs, H, I = 512, 4, 64, [128], 256, 512
    name = torch.cuda.get_device_name(0)
    print(f"device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}; {tokens} tokens per batch")
    for T in seqs:
        bench_attention(tokens, T, heads, heads, hd, torch.bfloat16)
    bench_attention(tokens, seqs[-1], heads, max(1, heads // 4), hd, torch.bfloat16)
    bench_attention(tokens, seqs[-1], heads, heads, 64, torch.bfloat16)
    bench_attention(tokens, seqs[0], heads, heads, hd, torch.float32)
    bench_gemm(tokens, H, I)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "results": results}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
