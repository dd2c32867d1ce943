#!/usr/bin/env bash
# The seed experiment in miniature (issue 8): four runs with the same budget, then the comparison.
#   bench/realmodel/seed_experiment.sh MODEL_DIR OUT_ROOT
# MODEL_DIR: a SmolLM2-135M-Instruct HF folder (docs/results.md: how to make one offline).
# Each run writes OUT_ROOT/<name>/ (report.html, metrics.jsonl, eval/); the comparison goes to
# OUT_ROOT/compare/ (compare.html, compare.png) and its table to stdout. Runs by hand, not in CI.
set -euo pipefail
model=${1:?MODEL_DIR}
root=${2:?OUT_ROOT}
python=${PYTHON:-python}
for name in seed-sft seed-idft seed-hinted_idft seed-dpo; do
  echo "== $name"
  "$python" -m jobs.run "configs/$name-smollm2.yaml" --set model.path="$model" \
      --output-dir "$root/$name" --overwrite
done
"$python" -m jobs.outputs.compare "$root/seed-sft" "$root/seed-idft" "$root/seed-hinted_idft" "$root/seed-dpo" \
    --output "$root/compare"
