#!/usr/bin/env bash
# gpu_verify.sh — build here, verify on a GPU machine: the CUDA tests of
# dtml-model (every op and the V-Net, GPU vs CPU) and the training loop's
# own DTML step (crates/dtml-train/benches/step.rs, `--cuda 0`) beside its
# PyTorch peer on the same GPU.
#
#   bench/gpu_verify.sh build   # here (no GPU needed): builds with the
#                               # build-only CUDA toolchain, strips and packs
#                               # the binaries into target/gpu-carry/
#   bench/gpu_verify.sh run     # on the GPU machine, from the repo root,
#                               # with target/gpu-carry carried along
#
# Device-tool call (one call, about 5 minutes on an H100):
#   run(command="bash bench/gpu_verify.sh run", carry=["target/gpu-carry"],
#       timeout_s=540)
# Results land in $OUT (or target/gpu-results when OUT is unset): tests*.log,
# bench.jsonl (one JSON line per run, dtml and PyTorch), env.txt.
#
# Environment for `run`: PYTHON (default python3, the one holding PyTorch),
# STEPS / WARMUP (default 10 / 3), SKIP_PEER=1 to skip PyTorch.
set -uo pipefail

cd "$(dirname "$0")/.."
CARRY=target/gpu-carry
TD=target/cuda-check

build() {
  set -e
  local exports
  exports=$(bash ../shared/cuda-toolchain.sh)
  eval "$exports"
  rm -rf "$CARRY"
  mkdir -p "$CARRY"
  # Executable path of the artifact named $1 from cargo's JSON messages.
  exe_of() {
    python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == name:
        print(m["executable"])
' "$1" | tail -n 1
  }
  local t b n
  t=$(cargo test -p dtml-model --features cudnn --release --no-run --test cuda \
        --target-dir "$TD" --message-format=json | exe_of cuda)
  b=$(cargo bench -p dtml-train --features cudnn --bench step --no-run \
        --target-dir "$TD" --message-format=json | exe_of step)
  # The same tests with `cuda` alone: the candle-composed convolution.
  n=$(cargo test -p dtml-model --features cuda --release --no-run --test cuda \
        --target-dir "$TD" --message-format=json | exe_of cuda)
  [[ -x "$t" && -x "$b" && -x "$n" ]] || { echo "gpu_verify: a build produced no executable" >&2; exit 1; }
  strip -o "$CARRY/cuda_tests" "$t"
  strip -o "$CARRY/dtml_step" "$b"
  strip -o "$CARRY/cuda_tests_no_cudnn" "$n"
  (cd "$CARRY" && xz -T2 -6 cuda_tests dtml_step cuda_tests_no_cudnn)
  git rev-parse HEAD > "$CARRY/commit"
  git status --short -- crates >> "$CARRY/commit"
  ls -la "$CARRY"
  du -sh "$CARRY"
  echo "gpu_verify: built; carry $CARRY (limit 64 MiB with the working tree)"
}

run() {
  local out="${OUT:-target/gpu-results}"
  mkdir -p "$out"
  local py="${PYTHON:-python3}" steps="${STEPS:-10}" warmup="${WARMUP:-3}" rc=0
  [[ -d "$CARRY" ]] || { echo "gpu_verify: $CARRY missing: run 'bench/gpu_verify.sh build' here and carry it" >&2; exit 2; }
  local bin=/tmp/dtml-gpu
  mkdir -p "$bin"
  for f in cuda_tests dtml_step cuda_tests_no_cudnn; do
    # Python's lzma, not xz(1): the GPU image is not known to have xz.
    if [[ -f "$CARRY/$f.xz" ]]; then
      "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$CARRY/$f.xz" "$bin/$f" || { echo "gpu_verify: cannot unpack $f.xz" >&2; exit 2; }
    else
      cp "$CARRY/$f" "$bin/$f"
    fi
    chmod +x "$bin/$f"
  done
  # The binaries link libcudart.so.13, libcublas(Lt).so.13, libcurand.so.10,
  # libnvrtc.so.13 and libcudnn.so.9 dynamically: take PyTorch's wheels' copies.
  local nvlibs
  nvlibs=$("$py" - <<'EOF'
import os, site
dirs = []
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for sub in ("nvidia/cu13/lib", "nvidia/cudnn/lib"):
        d = os.path.join(sp, sub)
        if os.path.isdir(d) and d not in dirs:
            dirs.append(d)
print(":".join(dirs))
EOF
  )
  [[ -n "$nvlibs" ]] || echo "gpu_verify: no nvidia/cu13 or nvidia/cudnn wheel libraries found for $py" >&2
  export LD_LIBRARY_PATH="${nvlibs}${nvlibs:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}"
  {
    echo "commit: $(head -n 1 "$CARRY/commit" 2>/dev/null)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1
    echo "--- ldd cuda_tests"
    ldd "$bin/cuda_tests" | grep -E 'cuda|cublas|curand|nvrtc|cudnn|not found'
  } 2>&1 | tee "$out/env.txt"
  if ldd "$bin/cuda_tests" | grep -q 'not found'; then
    echo "gpu_verify: missing shared libraries (see env.txt)" >&2
    rc=1
  fi

  echo "=== GPU tests (cudnn)"
  "$bin/cuda_tests" --test-threads=1 2>&1 | tee "$out/tests.log" || rc=1
  echo "=== GPU tests (cuda only: composed convolution)"
  "$bin/cuda_tests_no_cudnn" --test-threads=1 2>&1 | tee "$out/tests_no_cudnn.log" || rc=1

  echo "=== DTML step, paper size (width 16, 112x112x80, batch 4)"
  : > "$out/bench.jsonl"
  local flags
  for flags in "" "--tf32 --cudnn-benchmark"; do
    # shellcheck disable=SC2086
    "$bin/dtml_step" paper --labelled 2 --unlabelled 2 --cuda 0 --steps "$steps" --warmup "$warmup" $flags \
      2>>"$out/bench-stderr.log" | tee -a "$out/bench.jsonl" || rc=1
    if [[ -z "${SKIP_PEER:-}" ]]; then
      # shellcheck disable=SC2086
      PYTHONUNBUFFERED=1 "$py" bench/dtml_step_cuda_peer.py --steps "$steps" --warmup "$warmup" $flags 2>&1 \
        | tee -a "$out/bench.jsonl" || rc=1
    fi
  done
  echo "gpu_verify: done, rc=$rc, results in $out"
  return $rc
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  *) echo "usage: bench/gpu_verify.sh build|run" >&2; exit 2 ;;
esac
