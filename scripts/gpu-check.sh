#!/usr/bin/env bash
# The one device check of a session with a GPU (issue 10): builds the C++ CUDA checks for the local
# GPU only (cmake, no npm: the GPU machine has no Node), then, within SFT_DEADLINE_S (450 s):
#   1. every kernel against the CPU backend, and whole models — llama, qwen2, baichuan, baichuan2,
#      bloom — against the CPU and the transformers/peft fixtures (3 LoRA training steps fp32 and
#      bf16, KV-cache generation, full and prompt tuning, QLoRA on an NF4 base with 8-bit AdamW;
#      the NF4 quantizer, NF4 linear, 8-bit and paged AdamW against the CPU's): sft_cuda_tests
#   2. attention on tensor cores (issue 14): bf16 fwd+bwd at seq 2048, head_dim 128 (and GQA 4:1,
#      head_dim 64) beside a bf16 GEMM: TFLOP/s and the share of the GEMM rate, in summary.txt
#   3. one Llama-2-7B-shaped LoRA step (r64 on every linear, bf16, random weights made on the
#      device, the micro-batch filling the card), seq 512 and 2048: median step time, tokens/s,
#      MFU, plan and device memory: sft_cuda_tests --step
#   3b. one Llama-2-7B-shaped QLoRA step (NF4 base, r64, seq 1024, micro-batch 1, checkpointing):
#      its plan and the device memory it holds, one line in summary.txt
#   4. the kernel micro-benchmarks (medians) and PyTorch on the same shapes (bench/gpu/torch_ref.py)
#   5. compute-sanitizer: memcheck on one whole model (llama: every phase of step 1), racecheck on
#      the attention kernels (SIMT and tensor-core)
#
#   bash scripts/gpu-check.sh            # everything lands in $OUT (default ./gpu-out)
#
# At most 8 files in $OUT: summary.txt (one line per step: ok / FAIL / time / skip, seconds),
# gpu-check.log (everything: nvidia-smi, versions, the source's commit), build.log, tests.txt,
# step.json, bench.json, torch_ref.json, sanitizer.txt. bench/gpu/README.md says how to read them
# and how the numbers go into docs/BENCHMARKS.md.
#
# Environment: OUT, SFT_DEADLINE_S (default 450: later steps shorten or skip to end by then),
# SFT_BUILD_DIR (default ./build-gpu), SFT_GPU_ARCH (e.g. 90; default: the GPU's compute capability),
# SFT_CUBLAS_ROOT (folder with include/cublasLt.h + lib/libcublasLt.so.*; default: the toolkit's,
# else PyTorch's nvidia-cublas wheel), SFT_SKIP (space-separated steps to skip: attention step qlora
# bench torch sanitizer). A build that fails with cuBLASLt is retried without it (the tiled GEMM: slow but
# correct), and said so in summary.txt.
# Written in a session without a GPU; its first real run is the first time this code executes on
# hardware. Exit status: 0 when the build and every check passed (benchmarks never fail it).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT="${OUT:-$ROOT/gpu-out}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
T0=$(date +%s)
: > "$OUT/summary.txt"
status=0

note() { echo "$1" | tee -a "$OUT/summary.txt"; }
step() { echo; echo "=== $1 (t = $(( $(date +%s) - T0 )) s)"; STEP_T=$(date +%s); }
done_step() {  # name, rc [, what]; rc 124 = stopped by its timeout (noted, not a failure)
  local s=$(( $(date +%s) - STEP_T ))
  case "$2" in
    0) note "ok    $1 (${s} s)${3:+: $3}" ;;
    124) note "time  $1 (${s} s: stopped by its timeout)${3:+: $3}" ;;
    *) note "FAIL  $1 (${s} s, rc $2)${3:+: $3}" ;;
  esac
}
# Seconds a step may still take so the whole script ends by SFT_DEADLINE_S (default 450) after
# its start; at most $1.
# (At least 5: `timeout 0` would mean no limit.)
budget() {
  local left=$(( ${SFT_DEADLINE_S:-450} - ($(date +%s) - T0) - 10 ))
  [ $left -lt 5 ] && left=5
  [ $left -lt "$1" ] && echo $left || echo "$1"
}
skipped() { case " ${SFT_SKIP:-} " in *" $1 "*) note "skip  $1 (SFT_SKIP)"; return 0;; esac; return 1; }

# ---------------------------------------------------------------------------------------------
step "machine"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm --format=csv
  CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
  note "gpu   $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
else
  note "gpu   none: no nvidia-smi (a dry run: the checks will print SKIP)"
  CC=""
fi
ARCH="${SFT_GPU_ARCH:-${CC:-90}}"
export PATH="$PATH:/usr/local/cuda/bin"
NVCC=$(command -v nvcc || true)
echo "arch: sm_$ARCH; nvcc: ${NVCC:-none}; cmake: $(command -v cmake || echo none); ninja: $(command -v ninja || echo none)"
[ -n "$NVCC" ] && "$NVCC" --version | tail -2
echo "source: $(git rev-parse HEAD 2>/dev/null || echo 'no git checkout')"; git status --short 2>/dev/null | head -20
note "arch  sm_$ARCH"
if [ -z "$NVCC" ]; then note "FAIL  build: no nvcc on PATH or in /usr/local/cuda/bin"; exit 1; fi

# cuBLASLt: the toolkit's (CMake finds it itself), else the nvidia-cublas wheel PyTorch brings.
CUBLAS_ROOT="${SFT_CUBLAS_ROOT:-}"
CUDA_HOME_GUESS=$(dirname "$(dirname "$NVCC")")
if [ -z "$CUBLAS_ROOT" ] && ! ls "$CUDA_HOME_GUESS"/lib64/libcublasLt.so* "$CUDA_HOME_GUESS"/targets/*/lib/libcublasLt.so* >/dev/null 2>&1; then
  CUBLAS_ROOT=$(python3 - <<'EOF' 2>/dev/null
import glob, os
import importlib.util
for mod in ("nvidia.cu13", "nvidia.cublas"):
    try:
        spec = importlib.util.find_spec(mod)
    except Exception:
        continue
    for d in (spec.submodule_search_locations or []) if spec else []:
        if glob.glob(os.path.join(d, "lib", "libcublasLt.so*")) and os.path.exists(os.path.join(d, "include", "cublasLt.h")):
            print(d)
            raise SystemExit
EOF
)
fi
echo "cuBLASLt: ${CUBLAS_ROOT:-from the CUDA toolkit if it has one}"

# ---------------------------------------------------------------------------------------------
step "build (sm_$ARCH only)"
BUILD="${SFT_BUILD_DIR:-$ROOT/build-gpu}"
BIN="$BUILD/sft_cuda_tests"
: > "$OUT/build.log"
# $1: extra CMake arguments. The C++ sources of the engine and the CUDA backend's host side are
# what the addon builds too; only the Node-API part is left out (no Node here).
cmake_build() {
  local GEN="Unix Makefiles"; command -v ninja >/dev/null && GEN=Ninja
  rm -rf "$BUILD"
  cmake -S "$ROOT" -B "$BUILD" -G "$GEN" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DSFT_CUDA_EMU_TESTS=OFF "$@" >> "$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" --target sft_cuda_tests -j "$(nproc)" >> "$OUT/build.log" 2>&1
}
if ! command -v cmake >/dev/null; then note "FAIL  build: no cmake"; exit 1; fi
GEMM_NOTE=""
cmake_build ${CUBLAS_ROOT:+-DSFT_CUBLAS_ROOT="$CUBLAS_ROOT"}
rc=$?
if [ $rc != 0 ]; then
  grep -E "error|Error" "$OUT/build.log" | head -20
  note "FAIL  build with cuBLASLt (rc $rc, build.log): retrying without it (tiled GEMM)"
  status=1
  cmake_build -DSFT_CUBLASLT=OFF
  rc=$?
  GEMM_NOTE="WITHOUT cuBLASLt (GEMM timings are the fallback kernel's)"
fi
tail -3 "$OUT/build.log"
if [ $rc != 0 ] || [ ! -x "$BIN" ]; then
  grep -E "error|Error" "$OUT/build.log" | head -20
  done_step build 1 "see build.log"
  exit 1
fi
done_step build 0 "$(grep -o 'GEMMs via.*\|GEMMs use.*' "$OUT/build.log" | head -1) $GEMM_NOTE"

# ---------------------------------------------------------------------------------------------
step "checks against the CPU backend (kernels and whole models)"
timeout 300 "$BIN" | tee "$OUT/tests.txt"
rc=${PIPESTATUS[0]}
grep -q '^SKIP' "$OUT/tests.txt" && rc=1  # no usable GPU: nothing was checked
[ $rc = 0 ] || status=1
done_step checks $rc "$(tail -1 "$OUT/tests.txt"); $(grep -c '^FAIL' "$OUT/tests.txt") FAIL lines"

# Before the long steps, so the first GPU run measures it even if time runs short; its lines go to
# gpu-check.log (the eight files are taken), the "attention:" summary to summary.txt.
step "attention on tensor cores (seq 2048, head_dim 128)"
if ! skipped attention; then
  ATT_TXT=$(mktemp)
  timeout "$(budget 60)" "$BIN" --bench --attention --tokens 16384 | tee "$ATT_TXT"
  rc=${PIPESTATUS[0]}
  done_step attention "$rc" "$(grep '^attention:' "$ATT_TXT" | cut -c 12-)"
  rm -f "$ATT_TXT"
fi

step "7B-shaped LoRA step"
if ! skipped step; then
  timeout "$(budget 150)" "$BIN" --step --seq 512,2048 --steps 5 --json "$OUT/step.json"
  done_step "7B step" "$?" "step.json"
fi

# QLoRA's memory (issue 15): the 7B shape on an NF4 base, seq 1024, micro-batch 1, r64, checkpointing.
# Its one line goes to summary.txt (the eight files are taken).
step "7B-shaped QLoRA step (memory)"
if ! skipped qlora; then
  Q_TXT=$(mktemp)
  timeout "$(budget 120)" "$BIN" --step --qlora --ckpt --seq 1024 --batch 1 --steps 3 | tee "$Q_TXT"
  rc=${PIPESTATUS[0]}
  done_step "7B QLoRA step" "$rc" "$(grep -o 'seq .*' "$Q_TXT" | head -1)"
  rm -f "$Q_TXT"
fi

step "kernel benchmarks"
if ! skipped bench; then
  timeout "$(budget 120)" "$BIN" --bench --json "$OUT/bench.json"
  done_step bench "$?" "bench.json"
fi

step "PyTorch reference"
if ! skipped torch; then
  if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    timeout "$(budget 120)" python3 "$ROOT/bench/gpu/torch_ref.py" --json "$OUT/torch_ref.json"
    done_step torch "$?" "torch_ref.json"
  else
    note "skip  torch (no python3 with a CUDA PyTorch)"
  fi
fi

# Sanitizers last: they are slow, and the numbers above matter more if time runs out.
step "compute-sanitizer"
SAN=$(command -v compute-sanitizer || ls "$CUDA_HOME_GUESS"/bin/compute-sanitizer "$CUDA_HOME_GUESS"/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
if ! skipped sanitizer; then
  if [ -n "$SAN" ]; then
    : > "$OUT/sanitizer.txt"
    t=$(budget 120)
    if [ "$t" -ge 30 ]; then
      echo "=== memcheck: one whole model (llama), every phase" >> "$OUT/sanitizer.txt"
      timeout "$t" "$SAN" --tool memcheck --error-exitcode 9 "$BIN" --only models --arch llama >> "$OUT/sanitizer.txt" 2>&1
      rc=$?
      [ $rc = 0 ] || [ $rc = 124 ] || status=1
      tail -3 "$OUT/sanitizer.txt"
      done_step "memcheck (llama model)" $rc "sanitizer.txt (limit ${t} s)"
    else
      note "skip  memcheck (deadline)"
    fi
    t=$(budget 90)
    if [ "$t" -ge 30 ]; then
      echo "=== racecheck: attention kernels" >> "$OUT/sanitizer.txt"
      timeout "$t" "$SAN" --tool racecheck --error-exitcode 9 "$BIN" --only attention --no-large >> "$OUT/sanitizer.txt" 2>&1
      rc=$?
      [ $rc = 0 ] || [ $rc = 124 ] || status=1
      tail -3 "$OUT/sanitizer.txt"
      done_step "racecheck (attention)" $rc "sanitizer.txt (limit ${t} s)"
    else
      note "skip  racecheck (deadline)"
    fi
  else
    note "skip  compute-sanitizer (not found)"
  fi
fi

note "total $(( $(date +%s) - T0 )) s; exit $status"
echo; cat "$OUT/summary.txt"
ls "$OUT"
exit $status
