"""The gin/flags layer of the CLIs (T5X conventions), kept out of the library.

The flags (absl; medmt5/cli/cli_flags.py): --gin_file=F (repeatable, later files win),
--gin.NAME=VALUE (repeatable, applied after all files), --gin_bindings='NAME = VALUE' (T5X's
spelling, repeatable), --gin_search_paths=A,B and the multi-host flags --multiprocess_gpu,
--coordinator_address=HOST:PORT, --process_count=N, --process_index=I; --helpfull lists them.

A bare file name (`medmt5_tiny.gin`, `runs/eval.gin`) is looked up in the search paths, then
the current directory, the repository's gin/ folder (editable install) and
<sys.prefix>/share/medmt5/gin (regular install). `include` lines inside gin files use the same
search path.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import tokenize
import traceback
from collections.abc import Sequence

import jax

import gin
from medmt5.checkpointing.atomic_dir import atomic_write_text
from medmt5.cli.cli_flags import Flags, UsageError, parse_flags  # noqa: F401 (re-exported)
from medmt5.cli.gin_errors import (  # noqa: F401 (MACRO_EXAMPLES re-exported)
    MACRO_EXAMPLES,
    hint_for,
    missing_macro_message,
    syntax_message,
)
from medmt5.data import paths
from medmt5.data import pipeline as data_lib
from medmt5.model.config import T5Config
from medmt5.run import checkpoint_eval, configs, inference, loop
from medmt5.runtime import failures, preflight
from medmt5.runtime.failures import TrainingFailure
from medmt5.training import optimizers, partitioning

log = logging.getLogger(__name__)
# Every module logs to logging.getLogger(__name__); the CLIs show these packages' INFO lines.
LOGGED_PACKAGES = ("medmt5", "prompt_tuning", "tasks")

def default_gin_dirs() -> list[str]:
    """The gin/ folders that are always searched: repo checkout, then installed copy."""
    dirs = []
    repo_gin = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "gin")
    for d in (repo_gin, os.path.join(sys.prefix, "share", "medmt5", "gin")):
        if os.path.isdir(d) and d not in dirs:
            dirs.append(d)
    return dirs


def search_paths(extra: Sequence[str] = ()) -> list[str]:
    """User paths first, then the current directory, then the default gin/ folders."""
    out = []
    for p in [*extra, os.getcwd(), *default_gin_dirs()]:
        p = os.path.abspath(os.path.expanduser(p))
        if p not in out:
            out.append(p)
    return out


def resolve_gin_file(name: str, paths: Sequence[str]) -> str:
    """Absolute path of gin file `name` (as given, or found in `paths`); UsageError if none."""
    candidates = [name] if os.path.isabs(name) else [name] + [os.path.join(p, name) for p in paths]
    if not name.endswith(".gin"):
        candidates += [c + ".gin" for c in candidates]
    for c in candidates:
        if os.path.isfile(c):
            return os.path.abspath(c)
    raise UsageError(f"--gin_file={name}: no such file here or in the gin search path "
                     f"{list(paths)}. Add its folder with --gin_search_paths=DIR.")


_REGISTERED: dict = {}


def register_configurables() -> dict:
    """Registers the library's classes and functions with gin (idempotent).

    The library itself stays gin-free; only the CLIs call this. Names usable in gin files:
    T5Config, train (and its parts DataConfig, StepSettings, CheckpointConfig, EvalConfig,
    FreezeConfig), evaluate, infer, make_schedule, create_optimizer, setup_tasks. Returns
    {name: gin-wrapped callable}.
    """
    if _REGISTERED:
        return _REGISTERED
    for name, fn in (("T5Config", T5Config), ("train", loop.train),
                     *((c.__name__, c) for c in (configs.DataConfig, configs.StepSettings,
                                                 configs.CheckpointConfig, configs.EvalConfig,
                                                 configs.FreezeConfig)),
                     ("evaluate", checkpoint_eval.evaluate), ("infer", inference.infer),
                     ("make_schedule", optimizers.make_schedule),
                     ("create_optimizer", optimizers.create_optimizer),
                     ("setup_tasks", data_lib.setup_tasks)):
        with gin.unlock_config():  # a config locked by an earlier in-process run is no bar
            _REGISTERED[name] = gin.external_configurable(fn, name=name)
    return _REGISTERED


def call(name: str, **kwargs):
    """Calls the gin-configured library function `name` (see register_configurables)."""
    return register_configurables()[name](**kwargs)


def query_macro(name: str, default=None):
    """The value of gin macro `name` in the parsed config, or `default` if undefined."""
    try:
        return gin.query_parameter(f"{name}/macro.value")
    except ValueError:
        return default


def _binding_keys() -> tuple[list[str], list[str]]:
    """(macro names, "scope/selector.param" keys) bound in the parsed config, read from gin's
    public config_str() (one `KEY = value` line per binding; continuation lines are
    indented)."""
    macros, params = [], []
    for m in re.finditer(r"^(\S+) = ", gin.config_str(), re.M):
        key = m.group(1)
        (params if "." in key.rsplit("/", 1)[-1] else macros).append(key)
    return macros, params


def _macro_binding(name: str):
    """The value bound to macro `name` (a reference such as %OTHER unevaluated); KeyError if
    the macro is not defined."""
    try:
        return gin.query_parameter(f"{name}/macro.value")
    except ValueError:
        raise KeyError(name) from None


def _is_required(value) -> bool:
    """Whether a bound value is `%gin.REQUIRED`."""
    return isinstance(value, gin.config.ConfigurableReference) and \
        value.configurable.name == "constant" and value.scopes[-1:] == ["gin.REQUIRED"]


def _missing_required_macros() -> list[str]:
    """Macros set to %gin.REQUIRED in the parsed config (all of them, not just the first)."""
    macros, _ = _binding_keys()
    return sorted(n for n in macros if "/" not in n and _is_required(_macro_binding(n)))


class _GinSearchNoise(logging.Filter):
    """Drops gin's "Path not found" errors for search-path prefixes that simply miss."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "Path not found: %s" and "gin" in record.pathname)


_NOISE_FILTER = _GinSearchNoise()


def _parse_one(parse, source: str, program: str, paths: Sequence[str]) -> None:
    for attempt in range(3):
        try:
            parse()
            return
        except Exception as e:  # noqa: BLE001 - gin raises many types; all are config errors
            # CPython 3.11 < 3.11.8 (gh-106905): ast/compile in one thread while another
            # thread (orbax's async save, tf.data) also builds ASTs can fail spuriously with
            # this message. It is not the user's config: parse again.
            if "AST constructor recursion depth mismatch" in str(e) and attempt < 2:
                continue
            if isinstance(e, (SyntaxError, tokenize.TokenError)):
                raise UsageError(syntax_message(e, source, paths)) from None
            if isinstance(e, (ValueError, TypeError, IOError)):
                prefix = "" if source.startswith("--") else f"{source}: "
                text = hint_for(e, program, default_gin_dirs())
                if source.startswith("--") and source not in text:
                    text = f"{source}: {text}"
                raise UsageError(prefix + text) from None
            raise


def parse_gin(flags: Flags, program: str) -> None:
    """Clears gin, registers configurables, parses files then bindings, and finalizes.

    Files and bindings are parsed one at a time (the same result as gin's
    parse_config_files_and_bindings), so an error names its file and line or its flag.
    Raises UsageError with a message naming the missing macro / unknown binding / syntax
    error and an example flag, instead of gin's bare error.
    """
    register_configurables()
    gin.clear_config()
    if _NOISE_FILTER not in logging.getLogger().filters:
        logging.getLogger().addFilter(_NOISE_FILTER)
    paths = search_paths(flags.gin_search_paths)
    for p in paths:
        gin.add_config_file_search_path(p)
    files = [resolve_gin_file(f, paths) for f in flags.gin_files]
    if not files:
        raise UsageError(f"No --gin_file given. Example: python -m {program} "
                         f"--gin_file=medmt5_tiny.gin --gin.MODEL_DIR=\"'/tmp/run'\"")
    for path in files:
        _parse_one(lambda path=path: gin.parse_config_file(path), path, program, paths)
    sources = flags.binding_flags if len(flags.binding_flags) == len(flags.gin_bindings) \
        else [f"--gin_bindings={b}" for b in flags.gin_bindings]
    for binding, source in zip(flags.gin_bindings, sources):
        _parse_one(lambda binding=binding: gin.parse_config(binding), source, program, paths)
    missing = _missing_required_macros()
    if missing:
        raise UsageError(missing_macro_message(missing, program))
    check_values(flags)
    try:
        gin.finalize()
    except (ValueError, TypeError) as e:
        raise UsageError(hint_for(e, program, default_gin_dirs())) from e


def _macro_value(value, depth: int = 0):
    """(value, macro name) of a bound value, following %MACRO references."""
    macro = None
    while isinstance(value, gin.config.ConfigurableReference) and depth < 20:
        if value.configurable.name != "macro" or not value.scopes:
            return value, macro
        name = value.scopes[-1]
        macro = macro or name
        try:
            value, depth = _macro_binding(name), depth + 1
        except KeyError:
            return None, macro
    return value, macro


def bound_values() -> dict:
    """{"train.train_steps": (value, "TRAIN_STEPS" or None)} for every unscoped binding of the
    parsed config whose value is a literal (bindings to @configurables are left out)."""
    out = {}
    _, keys = _binding_keys()
    for key in keys:
        if "/" in key:  # scoped
            continue
        selector, param = key.rsplit(".", 1)
        value, macro = _macro_value(gin.query_parameter(key))
        if not isinstance(value, gin.config.ConfigurableReference):  # @f(): its result
            out[f"{selector.rsplit('.', 1)[-1]}.{param}"] = (value, macro)  # is checked
    return out  # where it is used


def check_values(flags: Flags) -> None:
    """The validation layer (medmt5.runtime.preflight.check_bound_values) on the parsed config."""
    names = [f[len("--gin."):].split("=", 1)[0] for f in flags.binding_flags
             if f.startswith("--gin.")]
    try:
        preflight.check_bound_values(bound_values(), names)
    except ValueError as e:
        raise UsageError(str(e)) from None


def write_config(model_dir: str, filename: str = "config.gin") -> str:
    """Writes the effective gin config (all bindings after overrides) to model_dir/filename."""
    path = paths.join(model_dir, filename)
    if jax.process_index() == 0:
        paths.makedirs(model_dir)
        atomic_write_text(path, gin.config_str())  # never a half-written config.gin
    return path


def init_distributed(flags: Flags) -> None:
    """Starts multi-host JAX when asked by flags, or on a multi-worker TPU VM slice."""
    if flags.multiprocess_gpu and flags.coordinator_address is None:
        raise UsageError("--multiprocess_gpu needs --coordinator_address=HOST:PORT, "
                         "--process_count=N and --process_index=I")
    try:
        partitioning.initialize_distributed(flags.coordinator_address, flags.process_count,
                                            flags.process_index)
    except ValueError as e:
        raise UsageError(str(e)) from e


# Modules whose import registers the seqio tasks the shipped gin files name. Users add their
# own with --gin.MIXTURE_OR_TASK_MODULE="'my_tasks'" (import_user_task_modules); a module
# that defines gin configurables needs an `import my_tasks` line in a gin file instead.
TASK_MODULES = ("tasks.pretraining", "tasks.benchmarks", "tasks.promot_tasks")


def import_task_modules(modules: Sequence[str] = TASK_MODULES) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but something it needs is missing
                raise
            log.warning("task module %s is not available; its tasks are not registered", name)


def _module_names(value) -> list[str]:
    """MIXTURE_OR_TASK_MODULE as a list of module names (None, a string, or a list of them)."""
    if value is None or value == "":
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(
            isinstance(n, str) and n.strip() for n in names):
        raise UsageError(f"MIXTURE_OR_TASK_MODULE={value!r}: give a module name or a list of "
                         "them, e.g. --gin.MIXTURE_OR_TASK_MODULE=\"'my_tasks'\" or "
                         "--gin.MIXTURE_OR_TASK_MODULE=\"['my_tasks', 'more_tasks']\".")
    return [n.strip() for n in names]


def import_user_task_modules(value) -> list[str]:
    """Imports the modules named by MIXTURE_OR_TASK_MODULE (T5X's macro), which register the
    user's own seqio tasks; called after the project's tasks are registered with the run's
    VOCABULARY, before any task is looked up. Returns the module names."""
    names = _module_names(value)
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
                raise  # the module exists but something it imports is missing
            raise UsageError(
                f"MIXTURE_OR_TASK_MODULE: cannot import {name!r} ({e}). Put the folder that "
                f"holds it on PYTHONPATH (or install it); Python searched {sys.path}.") from None
        log.info("imported task module %s (MIXTURE_OR_TASK_MODULE)", name)
    return names


def _report(program: str, err: BaseException) -> int:
    """Prints the one error line (or a traceback for an unexpected error); the exit code."""
    if isinstance(err, UsageError):
        print(f"{program}: error: {err}", file=sys.stderr)
        return 2
    if isinstance(err, KeyboardInterrupt):
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    if isinstance(err, (ValueError, FileNotFoundError, TrainingFailure)):
        # Configuration mistakes found while running (bad values, missing files) and run
        # failures (non-finite loss, unreadable checkpoint; docs/errors.md): the message
        # names what to fix. MEDMT5_TRACEBACK=1 shows where it was raised.
        if os.environ.get("MEDMT5_TRACEBACK"):
            traceback.print_exception(err)
        print(f"{program}: error: {type(err).__name__}: {err}\n(set MEDMT5_TRACEBACK=1 for "
              "the traceback)", file=sys.stderr)
        return 1
    traceback.print_exception(err)  # not an error we anticipated: a report needs it
    print(f"{program}: error: unexpected {type(err).__name__}: {err}", file=sys.stderr)
    return 1


def run_cli(main_fn, argv: Sequence[str], program: str, usage: str = "") -> int:
    """Parses flags and gin for `program`, then calls main_fn(flags); reports any error.

    Returns the process exit code (2 for a usage error, 1 for other errors). After an error
    the exception's frames are released (medmt5.runtime.failures.release), so no tf.data pipeline is
    left for interpreter shutdown; the console entry points end with failures.exit_process.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    for package in LOGGED_PACKAGES:  # our messages; orbax/absl/tf stay at WARNING
        logging.getLogger(package).setLevel(logging.INFO)
    try:
        flags = parse_flags(argv, usage)
        import_task_modules()  # before gin: task modules may define gin configurables
        parse_gin(flags, program)
        init_distributed(flags)
        call("setup_tasks")  # registers every task with the run's VOCABULARY
        import_user_task_modules(query_macro("MIXTURE_OR_TASK_MODULE"))
        main_fn(flags)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - every error ends in one report and an exit
        try:
            rc = _report(program, e)
        finally:
            failures.release(e)
        failures.flush_std()
        return rc
    return 0
