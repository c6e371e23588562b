"""Checkpoints in, checkpoints out: orbax training checkpoints, Hugging Face and T5X formats.

    checkpoint_io        load_checkpoint(path): our MODEL_DIR, an HF model dir or a T5X checkpoint
    checkpoints          the orbax CheckpointManager of a run; initial-checkpoint merging
    checkpoint_recovery  restoring and saving safely (corrupt steps quarantined, shape checks)
    hf_io, t5x_io        Hugging Face and T5X checkpoint files <-> the canonical parameter tree
    hf_layout            the Hugging Face weight names and config.json fields (no file access)
    param_tree           the canonical parameter tree: names, shapes, validation
    atomic_dir           all-or-nothing directories and files (write to temp, then rename)
"""
