"""What a training run observes and reports besides the step itself.

    evaluation       Evaluator: decode, postprocess and score seqio tasks
    best_checkpoint  BestCheckpointKeeper: MODEL_DIR/best, the best evaluated step
    checkpoint_eval  one checkpoint scored on tasks: `medmt5.eval`'s evaluate, ProMoT evaluation
    inference        a checkpoint's predictions as JSONL: `medmt5.infer`'s infer
    progress         the progress bar and TensorBoard summaries
    metrics_history  MODEL_DIR/train/metrics.jsonl, consistent with the checkpoints
    plotting         curves from TensorBoard event files to PNG
"""
