#!/bin/bash
# Two probes of the hard-data comparison (BENCHMARKS.md): mc-net with the step LR schedule and cps
# with a 50x slower ramp, seed 1, on the study's cache (run `cargo xtask study` first).
set -e
cd "$(dirname "$0")/.."
mkdir -p target/probe
D=target/study-all/prepared
B=target/release/dtml
run() { name=$1; shift; rm -rf target/probe/$name target/probe/eval-$name; $B train --data $D --out target/probe/$name --seed 1 --iterations 600 --patch 48,48,32 --width 8 "$@" > target/probe/$name.log 2>&1; $B evaluate --model target/probe/$name --data $D --out target/probe/eval-$name >> target/probe/$name.log 2>&1; echo "$name done"; }
run mcnet-step --method mc-net --lr-schedule step
run cps-slowramp --method cps --rampup-fraction 50
