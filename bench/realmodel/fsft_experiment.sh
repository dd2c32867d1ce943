#!/usr/bin/env bash
# f-divergence SFT and the learning-rate finding of "Implicit Reward as the Bridge" (issue 10), on the
# seed experiment's setup: SFT (lr 1e-5), the same SFT at lr 2e-6, and Pearson f-SFT (lr 1e-5), each
# with the eval actor's held-out pass@1 and forgetting metrics; then the comparison.
#   bench/realmodel/fsft_experiment.sh MODEL_DIR OUT_ROOT
# MODEL_DIR: a SmolLM2-135M-Instruct HF folder (docs/results.md: how to make one offline).
# Each run writes OUT_ROOT/<spec file name>/, the comparison OUT_ROOT/compare/. Runs by hand, not in CI.
set -euo pipefail
model=${1:?MODEL_DIR}
root=${2:?OUT_ROOT}
python=${PYTHON:-python}
runs=()
for spec in seed-sft-smollm2 sft-low-lr-smollm2 fsft-smollm2; do
  echo "== $spec"
  "$python" -m jobs.run "configs/$spec.yaml" --set model.path="$model" --output-dir "$root/$spec" --overwrite
  runs+=("$root/$spec")
done
"$python" -m jobs.outputs.compare "${runs[@]}" --output "$root/compare"
