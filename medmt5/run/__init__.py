"""What a training run observes and reports besides the step itself.

    evaluation       Evaluator: decode, postprocess and score seqio tasks; best-checkpoint keeping
    progress         the progress bar and TensorBoard summaries
    metrics_history  MODEL_DIR/train/metrics.jsonl, consistent with the checkpoints
    plotting         curves from TensorBoard event files to PNG
"""
