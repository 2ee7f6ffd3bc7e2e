#!/usr/bin/env bash
# Refit every bundled kernel profile from the bundled measured tables (run on demand,
# after a change to the cost model's kernels or to the calibration; the profiles and
# their fit reports are committed). Needs the calibrate extra (scipy).
set -euo pipefail
cd "$(dirname "$0")/.."
for gpu in a100-80gb-sxm:a100-sxm h100-sxm:h100-sxm h200:h200 l40s:l40s b200:b200; do
  for framework in vllm sglang trtllm; do
    servesim calibrate --gpu "${gpu%%:*}" --framework "$framework" \
      --out "servesim/data/profiles/${gpu##*:}-$framework.toml" > /dev/null
  done
done
servesim list | sed -n '/^Kernel profiles/,/^$/p'
