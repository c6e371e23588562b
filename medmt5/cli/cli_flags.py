"""The command-line flags of the gin CLIs, as absl flags (T5X's names and spelling).

  --gin_file=F            repeatable; later files win
  --gin.NAME=VALUE        repeatable; applied after all files (rewritten to --gin_bindings)
  --gin_bindings='NAME = VALUE'   T5X's long spelling of the same, repeatable
  --gin_search_paths=A,B  folders searched for bare gin file names and `include` lines
  --multiprocess_gpu --coordinator_address=HOST:PORT --process_count=N --process_index=I

absl's own flags work too: --flagfile (its lines may use --gin.NAME=VALUE), --helpfull, and
absl.logging's --verbosity / --alsologtostderr are accepted where T5X command lines pass them.
The CLIs parse with absl's FLAGS but not through absl.app.run: a flag mistake must end with
exit code 2 and one line naming the flag (docs/errors.md), where app.run exits 1, and every CLI
ends through medmt5.runtime.failures. --help and --helpfull print the usage and exit 0. The
tools without gin (convert, demo, prompt_tuning.export) use parse_tool_flags.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from collections.abc import Sequence

from absl import app, flags

FLAGS = flags.FLAGS


class UsageError(ValueError):
    """A command-line or gin-config mistake; the CLI prints it without a traceback."""


def _define_flags() -> None:
    if "gin_file" in FLAGS:  # defined once per process (a re-imported module is no error)
        return
    flags.DEFINE_multi_string(
        "gin_file", [], "Gin file to parse; repeatable, later files win. A bare name "
        "(medmt5_tiny.gin, runs/eval.gin) is looked up in --gin_search_paths, the current "
        "directory and the shipped gin/ folder")
    flags.DEFINE_multi_string(
        "gin_bindings", [], "Gin binding 'NAME = VALUE', applied after all --gin_file; "
        "repeatable. --gin.NAME=VALUE is the short spelling")
    flags.DEFINE_multi_string(
        "gin_search_paths", [], "Comma-separated folders searched (first) for gin files and "
        "`include` lines; repeatable")
    flags.DEFINE_bool("multiprocess_gpu", False,
                      "Start multi-host JAX (jax.distributed) for GPU processes.")
    flags.DEFINE_string("coordinator_address", None,
                        "HOST:PORT of process 0 (with --multiprocess_gpu).")
    flags.DEFINE_integer("process_count", None, "Number of JAX processes (multi-host).")
    flags.DEFINE_integer("process_index", None, "Index of this JAX process (multi-host).")
    app.define_help_flags()  # --help, --helpfull, --helpshort, --helpxml, --only_check_flags


_define_flags()

KNOWN = ("--gin_file, --gin.NAME=VALUE, --gin_bindings, --gin_search_paths, "
         "--multiprocess_gpu, --coordinator_address, --process_count, --process_index")
_HELP = {"--help", "-help", "--helpshort", "-helpshort", "-?", "--helpfull", "-helpfull"}


@dataclasses.dataclass
class Flags:
    """The parsed flags of one CLI run (a snapshot of absl's FLAGS)."""

    gin_files: list[str] = dataclasses.field(default_factory=list)
    gin_bindings: list[str] = dataclasses.field(default_factory=list)
    gin_search_paths: list[str] = dataclasses.field(default_factory=list)
    multiprocess_gpu: bool = False
    coordinator_address: str | None = None
    process_count: int | None = None
    process_index: int | None = None
    # the command-line argument each gin binding came from (same order as gin_bindings)
    binding_flags: list[str] = dataclasses.field(default_factory=list)


def rewrite_gin_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE` (the form absl parses).

    Returns (rewritten argv, the argument each binding came from, in order)."""
    out, sources = [], []
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--":  # absl: everything after it is positional
            out.extend(argv[i:])
            break
        if arg.startswith("--gin."):
            if "=" not in arg:
                raise UsageError(f"{arg}: write gin flags as --gin.NAME=VALUE, e.g. "
                                 "--gin.TRAIN_STEPS=100")
            name, value = arg[len("--gin."):].split("=", 1)
            out.append(f"--gin_bindings={name} = {value}")
            sources.append(arg)
            continue
        if arg.startswith("--gin_bindings="):
            sources.append(arg)
        elif arg == "--gin_bindings" and i + 1 < len(argv):
            sources.append(f"--gin_bindings={argv[i + 1]}")
        out.append(arg)
    return out, sources


def _check_values_present(argv: Sequence[str], flag_values=FLAGS) -> None:
    """`--gin_file` with no value (last, or followed by another flag): absl would take the next
    flag as the value."""
    for i, arg in enumerate(argv):
        if arg == "--":
            return
        name = arg[2:] if arg.startswith("--") and "=" not in arg else None
        if name and name in flag_values and not flag_values[name].boolean and (
                i + 1 >= len(argv) or argv[i + 1].startswith("--")):
            raise UsageError(f"Flag --{name} needs a value, e.g. --{name}=...")


def print_help(argv: Sequence[str], usage: str, flag_values=FLAGS,
               module: str | None = __name__) -> None:
    """Prints the usage for --help/--helpshort (the flags of `module`, or all of
    `flag_values` when None) or --helpfull (every absl flag), then exits 0; returns when argv
    asks for neither."""
    asked = [a.split("=", 1) for a in argv if a.split("=", 1)[0] in _HELP]
    if not asked or (len(asked[-1]) == 2 and asked[-1][1].lower() in ("false", "0")):
        return
    print((usage or __doc__).rstrip("\n"))
    if asked[-1][0].lstrip("-") == "helpfull" or module is None:
        print("\nFlags:\n" + flag_values.get_help())
    else:
        print("\nFlags:\n" + flag_values.module_help(module) + "\n  --gin.NAME=VALUE: a gin "
              "binding, e.g. --gin.TRAIN_STEPS=100 (short for "
              "--gin_bindings='TRAIN_STEPS = 100')")
        print("\nTry --helpfull to get a list of all flags.")
    sys.stdout.flush()
    raise SystemExit(0)


def absl_error(err: flags.Error, flag_values=FLAGS, known: str = KNOWN) -> UsageError:
    """absl's parse error as a UsageError naming the flag and what to do."""
    if isinstance(err, flags.UnrecognizedFlagError):
        close = difflib.get_close_matches(err.flagname, list(flag_values), n=1, cutoff=0.7)
        tip = f" Did you mean --{close[0]}?" if close else ""
        return UsageError(f"Unknown flag '--{err.flagname}'.{tip} Known: {known} (--helpfull "
                          "lists every flag)")
    m = re.match(r"flag --(\w+)=(.*?): (.*)", str(err), re.S)
    if m and m.group(1) in flag_values:
        name, value, reason = m.groups()
        if isinstance(flag_values[name].parser, flags.IntegerParser) and not re.fullmatch(
                r"\s*[-+]?\d+\s*", value):
            return UsageError(f"--{name} must be an integer, got {value!r}")
        return UsageError(f"--{name}={value}: {reason}")
    return UsageError(f"{err} (--helpfull lists every flag)")


def parse_flags(argv: Sequence[str], usage: str = "") -> Flags:
    """Parses the command line (without the program name) with absl into Flags.

    Raises UsageError naming a bad flag. `--help`/`--helpfull` print `usage` and exit 0.
    """
    try:  # --flagfile contents first, so that --gin.NAME=VALUE works inside a flag file too
        argv = FLAGS.read_flags_from_files(list(argv), force_gnu=False)
    except flags.Error as e:
        raise UsageError(f"--flagfile: {e}") from None
    print_help(argv, usage)
    rewritten, sources = rewrite_gin_args(argv)
    _check_values_present(rewritten)
    FLAGS.unparse_flags()  # a CLI run in-process after another starts from the defaults
    try:
        rest = FLAGS([sys.argv[0] or "medmt5", *rewritten])[1:]
    except flags.Error as e:
        raise absl_error(e) from None
    if rest:
        raise UsageError(f"Unexpected argument {rest[0]!r}: all arguments are flags such as "
                         "--gin_file=medmt5_tiny.gin or --gin.MODEL_DIR=\"'/tmp/run'\"")
    bindings = list(FLAGS.gin_bindings or [])
    return Flags(
        gin_files=list(FLAGS.gin_file or []), gin_bindings=bindings,
        gin_search_paths=[p for v in FLAGS.gin_search_paths or [] for p in v.split(",") if p],
        multiprocess_gpu=FLAGS.multiprocess_gpu, coordinator_address=FLAGS.coordinator_address,
        process_count=FLAGS.process_count, process_index=FLAGS.process_index,
        binding_flags=sources if len(sources) == len(bindings)
        else [f"--gin_bindings={b}" for b in bindings])


def parse_tool_flags(define, argv: Sequence[str], usage: str,
                     required: Sequence[str] = ()) -> tuple[flags.FlagValues, list[str]]:
    """absl parsing for the CLIs without gin (convert, demo, prompt_tuning.export).

    `define(flag_values)` defines the tool's flags on a FlagValues of its own (tools may share
    flag names such as --step without clashing in one process). Returns (parsed flag values,
    positional arguments). Raises UsageError naming a bad or missing flag; --help/--helpfull
    print `usage` and the flags, then exit 0.
    """
    fv = flags.FlagValues()
    define(fv)
    argv = list(argv)
    print_help(argv, usage, fv, module=None)
    _check_values_present(argv, fv)
    known = ", ".join(f"--{n}" for n in sorted(fv))
    try:
        rest = fv(["medmt5", *argv])[1:]
    except flags.Error as e:
        raise absl_error(e, fv, known) from None
    missing = [f"--{n}" for n in required if fv[n].value is None]
    if missing:
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                         "required (--help shows every flag)")
    return fv, rest
