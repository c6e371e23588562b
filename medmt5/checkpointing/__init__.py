"""Checkpoints in, checkpoints out: orbax training checkpoints, Hugging Face and T5X formats.

    checkpoint_io        load_checkpoint(path): our MODEL_DIR, an HF model dir or a T5X checkpoint
    checkpoints          the orbax CheckpointManager of a run; initial-checkpoint merging
    checkpoint_recovery  restoring and saving safely (corrupt steps quarantined, shape checks)
    hf_io, t5x_io        the Hugging Face and T5X layouts <-> the canonical parameter tree
    param_tree           the canonical parameter tree: names, shapes, validation
    vocab_record         the vocabulary identity stored with every checkpoint and prompt
    atomic_dir           all-or-nothing directories and files (write to temp, then rename)
"""
