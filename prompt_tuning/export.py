"""Export a trained soft prompt: `.npy`, or a Hugging Face PEFT prompt-tuning adapter.

  python -m prompt_tuning.export --checkpoint MODEL_DIR [--step N] --out DIR --format npy
  python -m prompt_tuning.export --checkpoint MODEL_DIR --out DIR --format peft \
      [--base_model HF_DIR]

--checkpoint: a prompt-tuning MODEL_DIR (latest step, or --step), MODEL_DIR/best, or a prompt
.npy. npy writes DIR/prompt.npy [P, H]. peft writes DIR/adapter_config.json (peft_type
PROMPT_TUNING, task_type SEQ_2_SEQ_LM, num_virtual_tokens P, token_dim H,
num_transformer_submodules 1) and DIR/adapter_model.safetensors with the [P, H] prompt under
"prompt_embeddings" (the key peft 0.21 loads into its prompt encoder). Load it on the
backbone exported with `medmt5.save_hf` (or `python -m medmt5.convert medmt5-to-hf`):
    PeftModel.from_pretrained(MT5ForConditionalGeneration.from_pretrained(HF_DIR), DIR)
peft prepends the prompt to inputs_embeds and extends the attention mask, exactly what
PromptedTransformer does. DIR is written all-or-nothing; a non-empty DIR needs --overwrite.
Both formats also write DIR/vocab.json, the vocabulary identity of the run that trained the
prompt (medmt5.data.vocab_record), which stage 2 checks against its own vocabulary.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import flags

from medmt5.checkpointing.atomic_dir import atomic_directory, check_destination
from medmt5.checkpointing.checkpoint_io import load_checkpoint
from medmt5.checkpointing.param_tree import CheckpointError
from medmt5.cli.cli_flags import UsageError, parse_tool_flags
from medmt5.data import (
    paths,  # --checkpoint and --out may be gs://
    vocab_record,
)
from prompt_tuning.initializers import load_npy

FORMATS = ("npy", "peft")
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_KEY = "prompt_embeddings"
NPY_NAME = "prompt.npy"


def read_prompt(checkpoint: str, step: int | None = None):
    """(prompt [P, H] float32, T5Config or None) from a MODEL_DIR or a .npy file."""
    if checkpoint.endswith(".npy"):
        if step is not None:
            raise CheckpointError(f"--step applies to a checkpoint dir, not {checkpoint}.")
        return load_npy(checkpoint), None

    if not paths.exists(checkpoint):
        raise CheckpointError(f"--checkpoint {checkpoint}: no such directory or file.")
    cfg, params = load_checkpoint(checkpoint, step=step)
    if "prompt" not in params:
        raise CheckpointError(f"{checkpoint}: the checkpoint has no params['prompt'] (not a "
                              "prompt-tuning run: train with gin/promot/stage1_prompt.gin).")
    prompt = np.asarray(params["prompt"]["embedding"], np.float32)
    if prompt.ndim != 2:
        raise CheckpointError(f"{checkpoint}: the prompt is a table {prompt.shape}; export "
                              "one task's [P, H] row with --format npy from Python.")
    return prompt, cfg


def peft_config(prompt: np.ndarray, cfg=None, base_model: str | None = None) -> dict:
    """adapter_config.json contents for peft's PromptTuningConfig."""
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_2_SEQ_LM",
        "num_virtual_tokens": int(prompt.shape[0]),
        "token_dim": int(prompt.shape[1]),
        # peft's seq2seq default (2) would expect 2P rows; prompt tuning only uses the first P.
        "num_transformer_submodules": 1,
        "prompt_tuning_init": "RANDOM",
        "inference_mode": True,
        "base_model_name_or_path": base_model,
    }
    if cfg is not None:
        config["num_attention_heads"] = int(cfg.num_heads)
        config["num_layers"] = int(cfg.num_encoder_layers)
    return config


def export(checkpoint: str, out: str, fmt: str = "npy", step: int | None = None,
           base_model: str | None = None, overwrite: bool = False) -> str:
    """Writes the prompt of `checkpoint` to directory `out`; returns a one-line summary."""
    if fmt not in FORMATS:
        raise CheckpointError(f"--format {fmt!r}: use one of {FORMATS}.")
    prompt, cfg = read_prompt(checkpoint, step)
    if cfg is not None and prompt.shape[1] != cfg.d_model:
        raise CheckpointError(f"{checkpoint}: prompt width {prompt.shape[1]} != d_model "
                              f"{cfg.d_model}.")

    record, _ = vocab_record.checkpoint_record(checkpoint)
    if record is None:
        print(f"warning: {checkpoint} has no vocabulary record ({vocab_record.RECORD_FILE}); "
              "the export cannot name the vocabulary its prompt was trained with.",
              file=sys.stderr)
    if paths.is_remote(out):  # written locally, then copied (object stores have no rename)
        check_destination(out, overwrite)
        stage = paths.staged_upload(out, replace=overwrite)
    else:
        stage = atomic_directory(out, overwrite)
    with stage as tmp:
        # the identity stage 2 / evaluation check (medmt5.data.vocab_record)
        if record is not None:
            with open(os.path.join(tmp, vocab_record.RECORD_FILE), "w") as f:
                json.dump(record, f, indent=2, sort_keys=True)
        if fmt == "npy":
            np.save(os.path.join(tmp, NPY_NAME), prompt)
        else:
            # lazy: optional: only Hugging Face checkpoints need safetensors
            from safetensors.numpy import save_file

            save_file({PEFT_KEY: np.ascontiguousarray(prompt)}, os.path.join(tmp, PEFT_WEIGHTS))
            with open(os.path.join(tmp, PEFT_CONFIG), "w") as f:
                json.dump(peft_config(prompt, cfg, base_model), f, indent=2)
    return f"wrote {fmt} prompt [{prompt.shape[0]}, {prompt.shape[1]}] to {out}"


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None,
                        "prompt-tuning MODEL_DIR, MODEL_DIR/best, or a prompt .npy", flag_values=fv)
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest)", flag_values=fv)
    flags.DEFINE_string("out", None, "output directory (absent or empty)", flag_values=fv)
    flags.DEFINE_enum("format", "npy", FORMATS, "npy: DIR/prompt.npy; peft: a Hugging Face "
                      "PEFT prompt-tuning adapter", flag_values=fv)
    flags.DEFINE_string("base_model", None,
                        "peft: base_model_name_or_path to record (the save_hf export)",
                        flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "replace a non-empty --out", flag_values=fv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        fv, rest = parse_tool_flags(_define_flags, sys.argv[1:] if argv is None else argv,
                                    __doc__, required=("checkpoint", "out"))
        if rest:
            raise UsageError(f"unexpected argument {rest[0]!r}: every argument is a flag, "
                             "e.g. --checkpoint=MODEL_DIR --out=DIR")
    except UsageError as e:
        print(f"prompt_tuning.export: error: {e}", file=sys.stderr)
        return 2
    try:
        print(export(fv.checkpoint, fv.out, fv.format, fv.step, fv.base_model, fv.overwrite))
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"prompt_tuning.export: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
