"""Checks of a run's settings before anything expensive starts (clear errors, exit 1).

`check_run(model_dir, task_feature_lengths)`: TASK_FEATURE_LENGTHS has positive "inputs" and
"targets"; MODEL_DIR is writable (a probe file is created and removed); a gs:// MODEL_DIR
needs Google Cloud credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default
file, or a Google Compute Engine / TPU VM with its metadata server), checked locally so a
machine without them fails at once instead of retrying the metadata server.

`check_bound_values(bindings)`: the one validation layer at the CLI boundary. Every value the
gin config binds to a parameter in PARAMETER_RULES (steps, periods, lengths, rates, sizes,
paths) is checked for type and range before anything runs or is written; the message names
the macro (TRAIN_STEPS) or parameter (train.log_period, EvalConfig.eval_beam_size), the bad
value, what it must be and an accepted flag. gin_utils.bound_values() collects the bindings.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

REQUIRED_FEATURES = ("inputs", "targets")


def check_feature_lengths(task_feature_lengths: Mapping[str, int]) -> None:
    if not isinstance(task_feature_lengths, Mapping):
        raise ValueError(f"TASK_FEATURE_LENGTHS={task_feature_lengths!r} must be a dict, e.g. "
                         "{'inputs': 512, 'targets': 114}")
    missing = [k for k in REQUIRED_FEATURES if k not in task_feature_lengths]
    if missing:
        raise ValueError(f"TASK_FEATURE_LENGTHS={dict(task_feature_lengths)} lacks feature(s) "
                         f"{missing}; give both, e.g. --gin.TASK_FEATURE_LENGTHS="
                         "\"{'inputs': 512, 'targets': 114}\"")
    for k in REQUIRED_FEATURES:
        v = task_feature_lengths[k]
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"TASK_FEATURE_LENGTHS[{k!r}]={v!r} must be a positive integer")


def has_gcs_credentials() -> bool:
    """Credentials google-auth would find, judged locally (no network). A storage emulator
    (STORAGE_EMULATOR_HOST, as gcsfs and google-cloud-storage honour it) needs none."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return True
    env = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if env:
        return os.path.isfile(env)
    config = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(
        os.path.expanduser("~"), ".config", "gcloud")
    if os.path.isfile(os.path.join(config, "application_default_credentials.json")):
        return True
    if os.environ.get("GCE_METADATA_HOST") or os.environ.get("TPU_ACCELERATOR_TYPE"):
        return True
    try:  # google-auth's own GCE test on Linux
        with open("/sys/class/dmi/id/product_name") as f:
            return "Google" in f.read()
    except OSError:
        return False


def check_model_dir(model_dir: str) -> None:
    """Raises ValueError unless MODEL_DIR can hold checkpoints."""
    if not model_dir:
        raise ValueError("MODEL_DIR is empty; e.g. --gin.MODEL_DIR=\"'/tmp/medmt5_run'\"")
    if model_dir.startswith("gs://"):
        if not has_gcs_credentials():
            raise ValueError(
                f"MODEL_DIR={model_dir} is on Google Cloud Storage but this machine has no "
                "credentials: run `gcloud auth application-default login` or set "
                "GOOGLE_APPLICATION_CREDENTIALS=/path/to/key.json (TPU/GCE VMs use their "
                "service account)")
        return
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, f".write_probe-{uuid.uuid4().hex[:8]}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"MODEL_DIR={model_dir} is not writable ({e.strerror}: "
                         f"{e.filename or model_dir}); choose a directory you can write to"
                         ) from None


def check_run(model_dir: str, task_feature_lengths: Mapping[str, int]) -> None:
    check_feature_lengths(task_feature_lengths)
    check_model_dir(model_dir)


# ---- the CLI boundary: types and ranges of the bound values (before anything runs) -------

@dataclasses.dataclass(frozen=True)
class Rule:
    """What a bound value must be. kind: "int", "float", "str", "path" or "lengths"."""
    kind: str
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # exclusive
    optional: bool = False  # None allowed
    low_open: bool = False

    def describe(self) -> str:
        what = {"int": "an integer", "float": "a number", "str": "a string in quotes",
                "path": "a path string in quotes",
                "lengths": "a dict of positive integers"}[self.kind]
        if self.low is not None and self.high is not None:
            what += f" in [{self.low:g}, {self.high:g})"
        elif self.low is not None:
            what += f" {'>' if self.low_open else '>='} {self.low:g}"
        return what + (" (or None)" if self.optional else "")


_STEPS = Rule("int", 0)
_POSITIVE = Rule("int", 1)
_POSITIVE_OR_NONE = Rule("int", 1, optional=True)
_RATE = Rule("float", 0, 1)
_PATH = Rule("path")
_PATH_OR_NONE = Rule("path", optional=True)
_NAME = Rule("str")

# configurable.parameter -> Rule. A value bound through a macro is reported under the macro's
# name (TRAIN_STEPS), with the parameter it feeds. Configurables that a run does not bind are
# skipped, so one table serves every CLI.
PARAMETER_RULES: dict[str, Rule] = {
    "train.model_dir": _PATH, "train.train_steps": _STEPS, "train.log_period": _POSITIVE,
    "train.num_partitions": _POSITIVE,
    "train.step_timeout_s": Rule("float", 0, optional=True, low_open=True),
    "DataConfig.mixture_or_task_name": _NAME, "DataConfig.task_feature_lengths": Rule("lengths"),
    "DataConfig.batch_size": _POSITIVE, "DataConfig.seed": Rule("int"),
    "StepSettings.num_microbatches": _POSITIVE,
    "StepSettings.vocab_chunk_size": _POSITIVE_OR_NONE,
    "StepSettings.z_loss": Rule("float", 0), "StepSettings.label_smoothing": _RATE,
    "CheckpointConfig.initial_checkpoint_path": _PATH_OR_NONE,
    "CheckpointConfig.save_period": Rule("int", 0, optional=True),
    "CheckpointConfig.keep_checkpoints": _POSITIVE_OR_NONE,
    "EvalConfig.eval_period": _STEPS, "EvalConfig.eval_max_examples": _POSITIVE_OR_NONE,
    "EvalConfig.eval_batch_size": _POSITIVE_OR_NONE, "EvalConfig.eval_beam_size": _POSITIVE,
    "EvalConfig.eval_split": _NAME,
    "make_schedule.learning_rate": Rule("float", 0, low_open=True),
    "make_schedule.warmup_steps": _STEPS, "make_schedule.decay_steps": _POSITIVE_OR_NONE,
    "T5Config.dropout_rate": _RATE, "T5Config.vocab_size": _POSITIVE,
    "T5Config.d_model": _POSITIVE, "T5Config.d_kv": _POSITIVE, "T5Config.d_ff": _POSITIVE,
    "T5Config.num_heads": _POSITIVE, "T5Config.num_encoder_layers": _POSITIVE,
    "T5Config.num_decoder_layers": _POSITIVE,
    "prompted_model.prompt_length": _POSITIVE,
    "setup_tasks.vocabulary": Rule("str", optional=True), "setup_tasks.corpus_dir": _PATH_OR_NONE,
    "setup_tasks.benchmark_dir": _PATH_OR_NONE, "setup_tasks.promot_dir": _PATH_OR_NONE,
}
for _fn in ("evaluate", "infer", "promot_evaluate"):
    PARAMETER_RULES.update({
        f"{_fn}.checkpoint_path": _PATH, f"{_fn}.task_feature_lengths": Rule("lengths"),
        f"{_fn}.batch_size": _POSITIVE, f"{_fn}.max_examples": _POSITIVE_OR_NONE,
        f"{_fn}.beam_size": _POSITIVE, f"{_fn}.max_decode_length": _POSITIVE_OR_NONE,
        f"{_fn}.num_partitions": _POSITIVE, f"{_fn}.split": _NAME,
        f"{_fn}.output_dir": _PATH_OR_NONE})
PARAMETER_RULES.update({"infer.output_file": _PATH, "infer.input_file": _PATH_OR_NONE,
                        "promot_evaluate.prompt_file": _PATH_OR_NONE})


def _problem(value: Any, rule: Rule) -> str | None:
    """Why `value` breaks `rule` (None if it does not)."""
    if type(value).__name__ == "ConfigurableReference":  # @fn(): checked by fn when called
        return None                                       # (e.g. @required_checkpoint())
    if value is None:
        return None if rule.optional else "is None"
    if rule.kind in ("str", "path"):
        if not isinstance(value, str):
            return f"is a {type(value).__name__}"
        if not value.strip():
            return "is empty"
        return None
    if rule.kind == "lengths":
        if not isinstance(value, Mapping):
            return f"is a {type(value).__name__}"
        bad = {k: v for k, v in value.items()
               if isinstance(v, bool) or not isinstance(v, int) or v <= 0}
        return f"has non-positive or non-integer length(s) {bad}" if bad else None
    numeric = (int,) if rule.kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric):
        return f"is a {type(value).__name__}"
    if value != value:  # NaN
        return "is NaN"
    if rule.low is not None and (value < rule.low or (rule.low_open and value == rule.low)):
        return "is out of range"
    if rule.high is not None and value >= rule.high:
        return "is out of range"
    return None


def _suggestion(name: str, value: Any, rule: Rule) -> str:
    """An example flag that would be accepted, built from the rejected value if possible."""
    if rule.kind in ("int", "float") and isinstance(value, str):
        try:
            number = int(value) if rule.kind == "int" else float(value)
        except ValueError:
            pass
        else:
            if _problem(number, rule) is None:
                return f"--gin.{name}={number} (no quotes: gin reads '{value}' as a string)"
    if rule.kind in ("str", "path") and value is not None and not isinstance(value, str):
        return f"--gin.{name}=\"'{value}'\" (strings need inner quotes)"
    examples = {"int": "1" if (rule.low or 0) >= 1 else "0",
                "float": "0.1" if rule.high else "1e-3",
                "str": "\"'name'\"", "path": "\"'/path/to/dir'\"",
                "lengths": "\"{'inputs': 512, 'targets': 114}\""}
    return f"--gin.{name}={examples[rule.kind]}"


def check_bound_values(bindings: Mapping[str, tuple[Any, str | None]],
                       flag_names: Sequence[str] = ()) -> None:
    """Raises ValueError naming every bad value of `bindings` ({"DataConfig.batch_size": (value,
    macro name or None)}) against PARAMETER_RULES. flag_names: the NAMEs given as --gin.NAME
    flags, so the message says whether the value came from a flag or a gin file."""
    problems = []
    reported = set()
    for param, (value, macro) in bindings.items():
        rule = PARAMETER_RULES.get(param)
        if rule is None:
            continue
        why = _problem(value, rule)
        if why is None:
            continue
        name = macro or param
        if name in reported:
            continue
        reported.add(name)
        where = f" (--gin.{name} flag)" if name in flag_names else ""
        feeds = f", used as {param}" if macro else ""
        problems.append(f"{name}={value!r}{where}{feeds} {why}: it must be {rule.describe()}; "
                        f"e.g. {_suggestion(name, value, rule)}")
    if problems:
        raise ValueError("invalid value" + ("s" if len(problems) > 1 else "") + ":\n  "
                         + "\n  ".join(problems))
