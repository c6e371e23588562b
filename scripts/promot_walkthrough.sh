#!/usr/bin/env bash
# Runs every ProMoT variant of docs/promot.md on the tiny model and the shipped samples, in
# order, and prints each command before its output (the doc's blocks are this script's log).
#   scripts/promot_walkthrough.sh [WORK_DIR]        (default /tmp/promot_walk; ~15 min on 2 cores)
# Run from the repository root with the project's virtual environment active (or PY=...).
set -uo pipefail
W=${1:-/tmp/promot_walk}
PY=${PY:-python}
rm -rf "$W"; mkdir -p "$W"

run() {  # prints the command as a user types it, then runs it (exit status shown when not 0)
  printf '\n$ %s\n' "$*" | sed "s#$PY -m#python -m#"
  "$@" 2>&1 | grep -v -E 'cudart_stub|absl::InitializeLog|^WARNING: All log|TF_ENABLE_ONEDNN|oneDNN custom|cpu_feature_guard|rebuild TensorFlow|AVX|Unable to register|computation_placer|E0000|^\s*$'
  local rc=${PIPESTATUS[0]}
  [ "$rc" -ne 0 ] && echo "rc=$rc"
  return 0
}

S=40        # stage steps (the recipe: 5,000 prompt / 1,000 model steps at batch 64)
# 0. A tiny backbone (the shipped tiny recipe: span corruption on the sample corpus).
run $PY -m medmt5.train --gin_file=medmt5_tiny.gin --gin.MODEL_DIR="'$W/pre'" --gin.TRAIN_STEPS=200

# 1. Stage 1 (prompt tuning) and stage 2 (model tuning, prompt attached and frozen) on RTE.
run $PY -m medmt5.train --gin_file=models/mt5_tiny.gin --gin_file=promot/stage1_prompt.gin \
  --gin.MODEL_DIR="'$W/rte_s1'" --gin.INITIAL_CHECKPOINT_PATH="'$W/pre'" \
  --gin.TRAIN_STEPS=$S --gin.EVAL_PERIOD=20 --gin.BATCH_SIZE=8
run cat "$W/rte_s1/prompts/best.json"
run $PY -m medmt5.train --gin_file=models/mt5_tiny.gin --gin_file=promot/stage2_model.gin \
  --gin.MODEL_DIR="'$W/rte_s2'" --gin.INITIAL_CHECKPOINT_PATH="'$W/pre'" \
  --gin.PROMPT_FILE="'$W/rte_s1/prompts/prompt_best.npy'" \
  --gin.TRAIN_STEPS=$S --gin.EVAL_PERIOD=20 --gin.BATCH_SIZE=8

# 2. Evaluation: prompt attached on the tuned task, removed on an in-context task.
run $PY -m prompt_tuning.evaluate --gin_file=promot/icl_eval.gin \
  --gin.CHECKPOINT_PATH="'$W/rte_s2/best'" --gin.MIXTURE_OR_TASK_NAME="'promot_rte'" \
  --gin.EVAL_SPLIT="'validation'" --gin.PROMPT_MODE="'attached'" \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 8}"
run $PY -m prompt_tuning.evaluate --gin_file=promot/icl_eval.gin \
  --gin.CHECKPOINT_PATH="'$W/rte_s2/best'" --gin.MIXTURE_OR_TASK_NAME="'icl_cb_1shot'" \
  --gin.PROMPT_MODE="'removed'" --gin.TASK_FEATURE_LENGTHS="{'inputs': 1024, 'targets': 8}"

# 3. ProMoT + 1-shot: a budget smaller than the 1-shot inputs stops before the first step;
#    with the recipe's budget it trains.
run $PY -m medmt5.train --gin_file=models/mt5_tiny.gin --gin_file=promot/stage1_prompt.gin \
  --gin.MODEL_DIR="'$W/rte1shot_s1_short'" --gin.INITIAL_CHECKPOINT_PATH="'$W/pre'" \
  --gin.MIXTURE_OR_TASK_NAME="'promot_rte_1shot'" \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 128, 'targets': 8}" --gin.TRAIN_STEPS=2 \
  --gin.EVAL_PERIOD=2 --gin.BATCH_SIZE=8
run $PY -m medmt5.train --gin_file=models/mt5_tiny.gin --gin_file=promot/stage1_prompt.gin \
  --gin.MODEL_DIR="'$W/rte1shot_s1'" --gin.INITIAL_CHECKPOINT_PATH="'$W/pre'" \
  --gin.MIXTURE_OR_TASK_NAME="'promot_rte_1shot'" --gin.TRAIN_STEPS=20 \
  --gin.EVAL_PERIOD=20 --gin.BATCH_SIZE=8
run $PY -m medmt5.train --gin_file=models/mt5_tiny.gin --gin_file=promot/stage2_model.gin \
  --gin.MODEL_DIR="'$W/rte1shot_s2'" --gin.INITIAL_CHECKPOINT_PATH="'$W/pre'" \
  --gin.MIXTURE_OR_TASK_NAME="'promot_rte_1shot'" \
  --gin.PROMPT_FILE="'$W/rte1shot_s1/prompts/prompt_best.npy'" --gin.TRAIN_STEPS=20 \
  --gin.EVAL_PERIOD=20 --gin.BATCH_SIZE=8

# 4. Multi-task ProMoT: a stage-1 prompt per task, then one stage 2 on the mixture.
run $PY -m medmt5.train --gin_file=models/mt5_tiny.gin --gin_file=promot/stage1_prompt.gin \
  --gin.MODEL_DIR="'$W/enfr_s1'" --gin.INITIAL_CHECKPOINT_PATH="'$W/pre'" \
  --gin.MIXTURE_OR_TASK_NAME="'promot_wmt14_enfr'" \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 128}" \
  --gin.TRAIN_STEPS=$S --gin.EVAL_PERIOD=20 --gin.BATCH_SIZE=8
run $PY -m medmt5.train --gin_file=models/mt5_tiny.gin --gin_file=promot/multitask_stage2.gin \
  --gin.MODEL_DIR="'$W/multitask_s2'" --gin.INITIAL_CHECKPOINT_PATH="'$W/pre'" \
  --gin.PROMPT_FILES="['$W/rte_s1/prompts/prompt_best.npy', '$W/enfr_s1/prompts/prompt_best.npy']" \
  --gin.TRAIN_STEPS=$S --gin.BATCH_SIZE=8
run $PY -m prompt_tuning.evaluate --gin_file=promot/icl_eval.gin \
  --gin.CHECKPOINT_PATH="'$W/multitask_s2'" --gin.PROMPT_MODE="'attached'" \
  --gin.MULTITASK_TASKS="['promot_rte', 'promot_wmt14_enfr']" \
  --gin.MIXTURE_OR_TASK_NAME="'promot_multitask'" --gin.EVAL_SPLIT="'validation'" \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 128}"
run $PY -m prompt_tuning.evaluate --gin_file=promot/icl_eval.gin \
  --gin.CHECKPOINT_PATH="'$W/multitask_s2'" --gin.PROMPT_MODE="'attached'" \
  --gin.MIXTURE_OR_TASK_NAME="'promot_multitask'" --gin.EVAL_SPLIT="'validation'"

# 5. Sequential ProMoT (RTE, then WMT14 en-fr), held-out in-context tasks after each.
run $PY -m prompt_tuning.sequential --gin_file=models/mt5_tiny.gin --gin_file=promot/sequential.gin \
  --gin.MODEL_DIR="'$W/sequential'" --gin.INITIAL_CHECKPOINT_PATH="'$W/pre'" \
  --gin.SEQUENTIAL_TASKS="['promot_rte', 'promot_wmt14_enfr']" \
  --gin.HELDOUT_TASKS="['icl_cb_1shot', 'icl_wic_1shot']" --gin.BATCH_SIZE=8 \
  --gin.PROMPT_STEPS=20 --gin.MODEL_STEPS=20 --gin.PROMPT_EVAL_PERIOD=20 --gin.MODEL_EVAL_PERIOD=20 \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 1024, 'targets': 128}"

# 6. Export: the prompt as .npy, the backbone for Hugging Face, the prompt as a PEFT adapter.
run $PY -m prompt_tuning.export --checkpoint "$W/rte_s1" --out "$W/export_npy" --format npy
run $PY -m medmt5.convert medmt5-to-hf "$W/rte_s2/best" "$W/export_hf"
run $PY -m prompt_tuning.export --checkpoint "$W/rte_s2/best" --out "$W/export_peft" \
  --format peft --base_model "$W/export_hf"

# 7. The medical in-context check, per language: the pretrained backbone, ProMoT's stage 2,
#    and plain fine-tuning on RTE with the same steps and LR (the format-leak reference).
run $PY -m medmt5.train --gin_file=models/mt5_tiny.gin --gin_file=promot/finetune_baseline.gin \
  --gin.MODEL_DIR="'$W/rte_ft'" --gin.INITIAL_CHECKPOINT_PATH="'$W/pre'" \
  --gin.TRAIN_STEPS=$S --gin.EVAL_PERIOD=20 --gin.BATCH_SIZE=8
for ck in pre rte_s2/best rte_ft/best; do
  run $PY -m prompt_tuning.evaluate --gin_file=promot/icl_medical_check.gin \
    --gin.CHECKPOINT_PATH="'$W/$ck'" --gin.EVAL_OUTPUT_DIR="'$W/medcheck_${ck%%/*}'" \
    --gin.promot_evaluate.max_examples=4
done
echo "walkthrough done: $W"
