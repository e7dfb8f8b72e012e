#!/usr/bin/env bash
# The main job: set up, pre-train SimCLR briefly on Fashion-MNIST, evaluate (linear probe + kNN beside a
# random-init encoder), export the encoder as a SavedModel, and say where everything went.
# About 5 minutes on 2 CPU cores with AVX-512 BF16 once .venv exists (400 steps in bfloat16);
# about 12 minutes on AVX2-only CPUs (float32). OUT (default runs/demo) holds the results;
# re-running resumes / reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
OUT=${OUT:-runs/demo}
STEPS=${STEPS:-400}
export TF_CPP_MIN_LOG_LEVEL=2

echo "[demo] 1/3 pre-training SimCLR (ResNet-18 x0.25, CIFAR stem) for $STEPS steps of 256 images"
# The flagfile computes in bfloat16; CPUs without bfloat16 instructions emulate it, far slower than float32.
PRECISION=mixed_bfloat16
grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null || PRECISION=none
echo "[demo] compute precision: $PRECISION"
# The flagfile's 2-epoch warm-up (420 steps) is longer than the demo: warm up for the first 10% of its steps
# so that the learning rate also decays on its cosine inside the run.
WARMUP=$(python3 -c "print(round(0.1 * $STEPS / 210, 4))")
tfssl-train --flagfile=flags/simclr_fashion_mnist.flags --model_dir="$OUT/run" --train_steps="$STEPS" \
  --warmup_epochs="$WARMUP" \
  --checkpoint_every=100 --mixed_precision="$PRECISION" --knn_monitor_every=$((STEPS / 4))
echo "[demo] 2/3 evaluating: linear probe (l2 chosen on validation) and weighted kNN, test reported once"
tfssl-eval --model_dir="$OUT/run"
echo "[demo] 3/3 exporting the encoder"
tfssl-export --model_dir="$OUT/run" --export_base="$OUT/export" --model_name=tfssl_encoder

cat <<MSG

[demo] done. Outputs:
  $OUT/run/flags.json            resolved flags of the run
  $OUT/run/metrics.csv           training metrics (also: tensorboard --logdir $OUT/run/tensorboard)
  $OUT/run/checkpoints/          checkpoints (re-run the same command to resume or extend)
  $OUT/run/eval/result.json      evaluation figures above, with cached features
  $OUT/export/tfssl_encoder/N/   SavedModel in TF Serving layout (version N; export/README.md serves it)
This is a short demo run; benchmarks/accuracy.py runs the full recipe (README, "Results").
MSG
