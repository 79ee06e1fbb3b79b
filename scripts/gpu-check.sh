#!/usr/bin/env bash
# The one script a session with a GPU runs (issue 3): builds the CUDA kernel checks for the local
# GPU only, checks every kernel against the CPU backend, benchmarks them, times PyTorch on the same
# shapes, and runs the checks under compute-sanitizer. ~3-5 minutes on an H100; never more than
# SFT_DEADLINE_S (450 s) plus the build and the checks' own limits.
#
#   bash scripts/gpu-check.sh            # everything lands in $OUT (default ./gpu-out)
#
# Outputs under $OUT: summary.txt (one line per step: ok / FAIL / skipped, with seconds),
# gpu-check.log (all output), nvidia-smi.txt, build.log, tests.txt, bench.txt + bench.json,
# torch_ref.txt + torch_ref.json, memcheck.txt, racecheck.txt. bench/gpu/README.md says how to
# read them and how the numbers go into docs/BENCHMARKS.md.
#
# Environment: OUT (output folder), SFT_DEADLINE_S (default 450: later steps shorten or skip to end
# by then), SFT_BUILD_DIR (default ./build-gpu), SFT_GPU_ARCH (e.g. 90; default: the GPU's compute capability),
# SFT_CUBLAS_ROOT (folder with include/cublasLt.h + lib/libcublasLt.so.*; default: the toolkit's,
# else PyTorch's nvidia-cublas wheel), SFT_NO_CMAKE=1 (build with nvcc directly; also the fallback
# when the CMake build fails), SFT_SKIP (space-separated steps to skip: torch sanitizer).
# Written in a session without a GPU and dry-run only there (no device: the checks print SKIP);
# its first real run is the first time any of the CUDA kernels execute on hardware.
# Exit status: 0 when the build and every check passed, 1 otherwise (benchmarks never fail it).
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
  nvidia-smi | tee "$OUT/nvidia-smi.txt"
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm --format=csv | tee -a "$OUT/nvidia-smi.txt"
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
{ git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null; } > "$OUT/source.txt" || echo "no git checkout" > "$OUT/source.txt"
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
rc=1
if command -v cmake >/dev/null && [ -z "${SFT_NO_CMAKE:-}" ]; then
  GEN="Unix Makefiles"; command -v ninja >/dev/null && GEN=Ninja
  { cmake -S "$ROOT" -B "$BUILD" -G "$GEN" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DSFT_CUDA_EMU_TESTS=OFF ${CUBLAS_ROOT:+-DSFT_CUBLAS_ROOT="$CUBLAS_ROOT"} &&
    cmake --build "$BUILD" --target sft_cuda_tests -j "$(nproc)"; } > "$OUT/build.log" 2>&1
  rc=$?
  [ $rc = 0 ] || { grep -E "error|Error" "$OUT/build.log" | head -20; note "FAIL  cmake build (rc $rc, build.log): trying nvcc directly"; }
fi
if [ $rc != 0 ]; then
  # No CMake (or its build failed): the same program straight from nvcc and the host compiler.
  mkdir -p "$BUILD"
  LT_FLAGS=()
  if [ -n "$CUBLAS_ROOT" ]; then
    LT_LIB=$(ls "$CUBLAS_ROOT"/lib/libcublasLt.so* | head -1)
    LT_FLAGS=(-DSFT_HAVE_CUBLASLT=1 -I"$CUBLAS_ROOT/include" -Xlinker "$LT_LIB" -Xlinker -rpath -Xlinker "$CUBLAS_ROOT/lib")
  elif ls "$CUDA_HOME_GUESS"/lib64/libcublasLt.so >/dev/null 2>&1; then
    LT_FLAGS=(-DSFT_HAVE_CUBLASLT=1 -lcublasLt)
  fi
  "$NVCC" -O3 -std=c++17 -arch="sm_$ARCH" --use_fast_math -I"$ROOT/native" -I"$ROOT/test/cuda" \
    "$ROOT"/native/cuda/*.cu "$ROOT"/test/cuda/*.cu "$ROOT"/native/cpu/*.cpp "$ROOT"/native/core/*.cpp \
    "${LT_FLAGS[@]}" -Xcompiler -march=native -lpthread -o "$BIN" >> "$OUT/build.log" 2>&1
  rc=$?
fi
tail -5 "$OUT/build.log"
if [ $rc != 0 ] || [ ! -x "$BIN" ]; then
  grep -E "error|Error" "$OUT/build.log" | head -20
  done_step build 1 "see build.log"
  exit 1
fi
done_step build 0 "$(grep -o 'GEMMs via.*\|GEMMs use.*' "$OUT/build.log" | head -1)"

# ---------------------------------------------------------------------------------------------
step "checks against the CPU backend"
timeout 300 "$BIN" | tee "$OUT/tests.txt"
rc=${PIPESTATUS[0]}
grep -q '^SKIP' "$OUT/tests.txt" && rc=1  # no usable GPU: nothing was checked
[ $rc = 0 ] || status=1
done_step checks $rc "$(tail -1 "$OUT/tests.txt"); $(grep -c '^FAIL' "$OUT/tests.txt") FAIL lines"

step "benchmarks"
timeout "$(budget 240)" "$BIN" --bench --json "$OUT/bench.json" | tee "$OUT/bench.txt"
done_step bench "${PIPESTATUS[0]}" "bench.txt, bench.json"

step "PyTorch reference"
if ! skipped torch; then
  if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    timeout "$(budget 180)" python3 "$ROOT/bench/gpu/torch_ref.py" --json "$OUT/torch_ref.json" | tee "$OUT/torch_ref.txt"
    done_step torch "${PIPESTATUS[0]}" "torch_ref.txt, torch_ref.json"
  else
    note "skip  torch (no python3 with a CUDA PyTorch)"
  fi
fi

# Sanitizers last: they are slow, and the numbers above matter more if time runs out.
step "compute-sanitizer"
SAN=$(command -v compute-sanitizer || ls "$CUDA_HOME_GUESS"/bin/compute-sanitizer "$CUDA_HOME_GUESS"/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
if ! skipped sanitizer; then
  if [ -n "$SAN" ]; then
    t=$(budget 120)
    if [ "$t" -ge 30 ]; then
      timeout "$t" "$SAN" --tool memcheck --error-exitcode 9 "$BIN" --no-large > "$OUT/memcheck.txt" 2>&1
      rc=$?
      [ $rc = 0 ] || [ $rc = 124 ] || status=1
      tail -3 "$OUT/memcheck.txt"
      done_step memcheck $rc "memcheck.txt (limit ${t} s)"
    else
      note "skip  memcheck (deadline)"
    fi
    t=$(budget 90)
    if [ "$t" -ge 30 ]; then
      timeout "$t" "$SAN" --tool racecheck --error-exitcode 9 "$BIN" --only attention --no-large > "$OUT/racecheck.txt" 2>&1
      rc=$?
      [ $rc = 0 ] || [ $rc = 124 ] || status=1
      tail -3 "$OUT/racecheck.txt"
      done_step "racecheck (attention)" $rc "racecheck.txt (limit ${t} s)"
    else
      note "skip  racecheck (deadline)"
    fi
  else
    note "skip  compute-sanitizer (not found)"
  fi
fi

note "total $(( $(date +%s) - T0 )) s; exit $status"
echo; cat "$OUT/summary.txt"
exit $status
