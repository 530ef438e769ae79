#!/usr/bin/env bash
# Defaults by measurement, ours beside the reference PyTorch run (issue
# 21): makes a dataset, prepares it with the default margin (labelled cases
# cropped to the label box) and as whole volumes, trains every setting with
# every seed, scores every run with the same evaluator (`dtml evaluate
# --stride 24,24,16`, the reference's windows), and prints mean test Dice,
# its spread over seeds and predicted / reference volume per setting.
#
#   DATA=la SEEDS="1 2 3" DATA_SEED=21 SETTINGS="peer-supervised supervised-whole-d0" \
#     TORCH_PYTHON=../torchenv/bin/python bash bench/defaults_study.sh OUT
#
# DATA=la (the default): ../shared/reference/make_la_like.py (32 training
# scans of 80x80x56, the first 3 labelled, 8 test scans); DATA=hard: the
# built-in data in its hard mode (`dtml generate --difficulty 1`, 20
# training cases of 64x64x48, the first 4 labelled, 10 test cases).
#
# A setting is `peer-METHOD` (../shared/reference/peer_dtml_train.py via
# bench/peer_cross.py: whole volumes, no dropout; its weights are kept and
# scored by dtml too) or `METHOD-CACHE-dDROPOUT[-bBATCH]` (dtml: CACHE crop
# or whole, channel dropout DROPOUT, BATCH labelled patches per step).
# Every run is 600 iterations, width 8, patch 48x48x32. Needs target/release/dtml, target/pyenv (made by
# `cargo xtask test`) and, for peer settings, a Python with torch. Finished
# runs are kept, so a second call adds seeds or settings or only prints
# the table.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "$1" && cd "$1" && pwd)"
mkdir -p "$out/runs"
data_seed="${DATA_SEED:-21}"
read -r -a seeds <<< "${SEEDS:-1 2 3}"
read -r -a settings <<< "${SETTINGS:-peer-supervised peer-dtml supervised-crop-d0.5 supervised-whole-d0 dtml-crop-d0.5 dtml-whole-d0}"
dtml="$root/target/release/dtml"
python="$root/target/pyenv/bin/python"
torch_python="${TORCH_PYTHON:-$root/../torchenv/bin/python}"
iters=600 width=8 patch=48,48,32
lscpu | grep "Model name" || true
"$dtml" info --system | grep -i tier || true
case "${DATA:-la}" in
  la) labelled=3
      [ -f "$out/data/dataset.json" ] || "$python" "$root/../shared/reference/make_la_like.py" "$out/data" "$data_seed" ;;
  hard) labelled=4
      [ -f "$out/data/dataset.json" ] || "$dtml" generate --out "$out/data" --difficulty 1 --test-cases 10 --seed "$data_seed" ;;
  *) echo "DATA must be la or hard" >&2; exit 2 ;;
esac
[ -f "$out/crop/manifest.json" ] || "$dtml" prepare --data "$out/data" --out "$out/crop" --labelled $labelled --patch $patch
[ -f "$out/whole/manifest.json" ] || "$dtml" prepare --data "$out/data" --out "$out/whole" --labelled $labelled --patch $patch --margin full,full,full
for seed in "${seeds[@]}"; do
  for setting in "${settings[@]}"; do
    name="$setting-s$seed"
    [ -f "$out/eval/$name/metrics.json" ] && continue
    start=$(date +%s)
    if [[ $setting == peer-* ]]; then
      method=${setting#peer-}
      "$torch_python" "$root/bench/peer_cross.py" train "$out/runs/$name" "$out/data" "$method" $iters $labelled "$seed" $width $patch \
        > "$out/runs/$name.log" 2>&1
      models=(--model "$out/runs/$name/student_a.pth")
      [ "$method" = dtml ] && models+=(--model "$out/runs/$name/student_b.pth")
    else
      IFS=- read -r method cache dropout batch <<< "$setting"
      batch_flags=()
      if [ -n "$batch" ]; then
        b=${batch#b}
        if [ "$method" = supervised ]; then batch_flags=(--labelled-batch "$b" --unlabelled-batch 0)
        else batch_flags=(--labelled-batch "$b"); fi
      fi
      "$dtml" train --data "$out/$cache" --out "$out/runs/$name" --method "$method" --iterations $iters \
        --patch $patch --width $width --seed "$seed" --dropout "${dropout#d}" "${batch_flags[@]}" \
        > "$out/runs/$name.log" 2>&1
      models=(--model "$out/runs/$name")
    fi
    echo "$name trained in $(( $(date +%s) - start )) s"
    "$dtml" evaluate "${models[@]}" --data "$out/data" --out "$out/eval/$name" --stride 24,24,16 --patch $patch > /dev/null
  done
done
# The same runs with the reference's 6-connected largest component.
for d in "$out"/eval/*; do
  name=$(basename "$d")
  [ -f "$out/eval6/$name/metrics.json" ] && continue
  if [ -f "$out/runs/$name/student_a.pth" ]; then
    models=(--model "$out/runs/$name/student_a.pth")
    [ -f "$out/runs/$name/student_b.pth" ] && models+=(--model "$out/runs/$name/student_b.pth")
  else
    models=(--model "$out/runs/$name")
  fi
  "$dtml" evaluate "${models[@]}" --data "$out/data" --out "$out/eval6/$name" --stride 24,24,16 --patch $patch \
    --connectivity 6 > /dev/null
done
"$python" - "$out" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {}
for d in sorted(glob.glob(os.path.join(out, "eval", "*"))):
    cases = json.load(open(os.path.join(d, "metrics.json")))["cases"]
    dice = sum(c["dice"] for c in cases) / len(cases)
    volume = sum(c["prediction_voxels"] for c in cases) / sum(c["reference_voxels"] for c in cases)
    setting, seed = os.path.basename(d).rsplit("-s", 1)
    own = os.path.join(out, "runs", os.path.basename(d), "peer.json")
    own = json.load(open(own))["test_dice_mean"] if os.path.exists(own) else None
    six = json.load(open(os.path.join(out, "eval6", os.path.basename(d), "metrics.json")))["cases"]
    six = sum(c["dice"] for c in six) / len(six)
    rows.setdefault(setting, []).append((int(seed), dice, volume, own, six))
print("| setting | mean Dice ± std over seeds | per seed | volume per seed | mean Dice, 6-connected | reference's own Dice |")
print("| --- | --- | --- | --- | --- | --- |")
for setting, rs in sorted(rows.items()):
    rs.sort()
    d = [r[1] for r in rs]
    std = statistics.stdev(d) if len(d) > 1 else float("nan")
    own = ", ".join(f"{r[3]:.4f}" for r in rs) if rs[0][3] is not None else ""
    six = [r[4] for r in rs]
    print(f"| {setting} | {statistics.mean(d):.4f} ± {std:.4f} | {', '.join(f'{x:.4f}' for x in d)} | "
          f"{', '.join(f'{r[2]:.3f}' for r in rs)} | {statistics.mean(six):.4f} | {own} |")
PY
