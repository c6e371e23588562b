"""Checkpoint converters.

  python -m medmt5.convert hf-to-medmt5  SRC_HF_DIR  DST_MODEL_DIR
  python -m medmt5.convert medmt5-to-hf  SRC         DST_HF_DIR      (SRC: any load_checkpoint path)
  python -m medmt5.convert t5x-to-medmt5 SRC_T5X     DST_MODEL_DIR

DST is written under DST.tmp-XXXX and renamed only when complete; a non-empty DST is refused
unless --overwrite. Errors print one line naming the file/parameter and exit with status 1.
SRC and DST may be gs:// URLs (medmt5.data.paths; an object store has no rename, so there DST is
written in place with the file that marks it complete last); an HF SRC may be a hub id
(google/mt5-small, hf://google/mt5-small@<revision>; medmt5.data.hub).
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from absl import flags

from medmt5.checkpointing.atomic_dir import check_destination
from medmt5.checkpointing.checkpoint_io import load_checkpoint, save_params_checkpoint
from medmt5.checkpointing.hf_io import is_hf_dir, load_hf, save_hf
from medmt5.checkpointing.param_tree import CheckpointError
from medmt5.checkpointing.t5x_io import load_t5x
from medmt5.cli.cli_flags import UsageError, parse_tool_flags
from medmt5.data import paths
from medmt5.data.hub import HubError, resolve_checkpoint
from medmt5.runtime import failures

COMMANDS = {  # command: (what it does, what SRC is, the flags it takes besides --overwrite)
    "hf-to-medmt5": ("Hugging Face MT5/T5 model dir -> medmt5 MODEL_DIR (orbax, step 0).",
                     "Hugging Face model directory (config.json + safetensors / "
                     "pytorch_model.bin) or hub id", ()),
    "medmt5-to-hf": ("medmt5 MODEL_DIR (or any checkpoint) -> Hugging Face model dir.",
                     "medmt5 MODEL_DIR, MODEL_DIR/checkpoints/<step>, HF dir or T5X checkpoint",
                     ("step",)),
    "t5x-to-medmt5": ("T5X checkpoint -> medmt5 MODEL_DIR (orbax, step 0).",
                      "T5X model dir, checkpoint_<step> dir, or its 'checkpoint' msgpack file",
                      ("step", "relative_attention_max_distance")),
}


@dataclasses.dataclass(frozen=True)
class ConvertArgs:
    command: str
    src: str
    dst: str
    overwrite: bool = False
    step: int | None = None
    relative_attention_max_distance: int = 128


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_bool("overwrite", False, "replace a non-empty DST", flag_values=fv)
    flags.DEFINE_integer("step", None, "checkpoint step (default: latest); medmt5-to-hf and "
                         "t5x-to-medmt5", flag_values=fv)
    flags.DEFINE_integer("relative_attention_max_distance", 128, "t5x-to-medmt5: not stored in "
                         "T5X checkpoints; mT5 uses 128 (default)", flag_values=fv)


def _usage() -> str:
    lines = [__doc__.rstrip("\n"), "", "Commands:"]
    for name, (what, src, _) in COMMANDS.items():
        lines.append(f"  {name:<14} {what}\n  {'':<14} SRC: {src}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> ConvertArgs:
    """COMMAND SRC DST [--overwrite] [--step=N] [--relative_attention_max_distance=N] (absl
    flags, before or after the positional arguments). Raises UsageError."""
    fv, rest = parse_tool_flags(_define_flags, argv, _usage())
    if not rest or rest[0] not in COMMANDS:
        got = f"got {rest[0]!r}" if rest else "none given"
        raise UsageError(f"the first argument is the command, one of {sorted(COMMANDS)} "
                         f"({got}); --help shows each")
    if len(rest) != 3:
        raise UsageError(f"{rest[0]} takes SRC and DST, got {rest[1:]}: "
                         f"python -m medmt5.convert {rest[0]} SRC DST")
    takes = COMMANDS[rest[0]][2]
    extra = [f"--{n}" for n in ("step", "relative_attention_max_distance")
             if fv[n].present and n not in takes]
    if extra:
        raise UsageError(f"{rest[0]} does not take {', '.join(extra)}")
    return ConvertArgs(rest[0], rest[1], rest[2], fv.overwrite, fv.step,
                       fv.relative_attention_max_distance)


# The checkpoint's own vocabulary travels with it (tasks/vocab.py reads it from the folder;
# docs/vocabulary.md): spiece.model, Hugging Face added tokens, our vocab.json record.
VOCABULARY_FILES = ("spiece.model", "added_tokens.json", "tokenizer.json", "vocab.json")


def copy_vocabulary(src: str, dst: str, names: Sequence[str] = VOCABULARY_FILES) -> list:
    """Copies the vocabulary files of checkpoint folder `src` (or, for .../checkpoints/<step>,
    its MODEL_DIR) into `dst`; returns the names copied (none when `src` has none)."""
    folder = src if paths.isdir(src) else paths.dirname(src)
    if paths.basename(paths.dirname(folder)) == "checkpoints":
        folder = paths.dirname(paths.dirname(folder))
    copied = []
    for name in names:
        if paths.isfile(paths.join(folder, name)):
            with paths.open(paths.join(dst, name), "wb") as f:
                f.write(paths.read_bytes(paths.join(folder, name)))
            copied.append(name)
    return copied


def run(args: ConvertArgs) -> str:
    """Perform one conversion; returns a one-line summary. Raises CheckpointError."""
    check_destination(args.dst, args.overwrite)  # fail before the (slow) read
    if args.command == "hf-to-medmt5":
        try:
            src = resolve_checkpoint(args.src)
        except HubError as e:
            raise CheckpointError(str(e)) from None
        if not is_hf_dir(src):
            raise CheckpointError(f"{args.src}: not a Hugging Face model directory "
                                  "(no config.json).")
        cfg, params = load_hf(src)
        save_params_checkpoint(cfg, params, args.dst, overwrite=args.overwrite)
        copy_vocabulary(src, args.dst, ("spiece.model", "added_tokens.json", "tokenizer.json"))
    elif args.command == "t5x-to-medmt5":
        cfg, params = load_t5x(args.src, args.step,
                               relative_attention_max_distance=args.relative_attention_max_distance)
        save_params_checkpoint(cfg, params, args.dst, overwrite=args.overwrite)
    elif args.command == "medmt5-to-hf":
        cfg, params = load_checkpoint(args.src, step=args.step)
        note = ""
        if "prompt" in params:
            params = {k: v for k, v in params.items() if k != "prompt"}
            note = " (soft prompt not exported: Hugging Face models have no place for it)"
        save_hf(cfg, params, args.dst, overwrite=args.overwrite)
        copy_vocabulary(args.src, args.dst)
        return f"wrote {args.dst}{note}"
    else:  # parse_args restricts the choices
        raise CheckpointError(f"unknown command {args.command!r}")
    return f"wrote {args.dst}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"medmt5-convert: error: {e}", file=sys.stderr)
        return 2
    try:
        print(run(args))
    except (CheckpointError, ValueError, OSError) as e:
        print(f"medmt5-convert {args.command}: error: {e}", file=sys.stderr)
        failures.release(e)
        return 1
    return 0


def console_main() -> None:
    failures.exit_process(main())


if __name__ == "__main__":
    console_main()
