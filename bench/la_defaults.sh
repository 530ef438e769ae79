#!/usr/bin/env bash
# Channel dropout and the label-box crop on LA-like data (issue 21):
# generates scans with ../shared/reference/make_la_like.py, prepares them
# with the default margin and with whole volumes, trains dtml with dropout
# 0.5 and 0 on each, scores every run with `dtml evaluate`, and prints mean
# test Dice and predicted / reference volume per setting.
#
#   SEEDS="1 2 3" DATA_SEED=7 bash bench/la_defaults.sh OUT
#
# Needs target/release/dtml and target/pyenv (numpy, scipy, nibabel: made
# by `cargo xtask test`). About 5 minutes per run on 2 cores; finished
# runs are kept, so a second call adds seeds or only prints the table.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "$1" && cd "$1" && pwd)"
data_seed="${DATA_SEED:-7}"
read -r -a seeds <<< "${SEEDS:-1 2 3}"
dtml="$root/target/release/dtml"
python="$root/target/pyenv/bin/python"
lscpu | grep "Model name" || true
"$dtml" info --system | grep -i tier || true
[ -f "$out/data/dataset.json" ] || "$python" "$root/../shared/reference/make_la_like.py" "$out/data" "$data_seed"
[ -f "$out/crop/manifest.json" ] || "$dtml" prepare --data "$out/data" --out "$out/crop" --labelled 3 --patch 48,48,32
[ -f "$out/whole/manifest.json" ] || "$dtml" prepare --data "$out/data" --out "$out/whole" --labelled 3 --patch 48,48,32 --margin full,full,full
for seed in "${seeds[@]}"; do
  for cache in crop whole; do
    for dropout in 0.5 0; do
      name="$cache-dropout$dropout-s$seed"
      [ -f "$out/eval/$name/metrics.json" ] && continue
      "$dtml" train --data "$out/$cache" --out "$out/runs/$name" --iterations 600 \
        --patch 48,48,32 --width 8 --seed "$seed" --dropout "$dropout"
      "$dtml" evaluate --model "$out/runs/$name" --data "$out/data" --out "$out/eval/$name" \
        --stride 24,24,16
    done
  done
done
"$python" - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = {}
for d in sorted(glob.glob(os.path.join(out, "eval", "*"))):
    cases = json.load(open(os.path.join(d, "metrics.json")))["cases"]
    dice = sum(c["dice"] for c in cases) / len(cases)
    volume = sum(c["prediction_voxels"] for c in cases) / sum(c["reference_voxels"] for c in cases)
    setting, seed = os.path.basename(d).rsplit("-s", 1)
    rows.setdefault(setting, []).append((int(seed), dice, volume))
print("| setting | mean Dice (per seed) | volume (per seed) |\n| --- | --- | --- |")
for setting, rs in sorted(rows.items()):
    rs.sort()
    mean = sum(r[1] for r in rs) / len(rs)
    print(f"| {setting} | {mean:.3f} ({', '.join(f'{r[1]:.3f}' for r in rs)}) | "
          f"{', '.join(f'{r[2]:.3f}' for r in rs)} |")
PY
