"""Checks of a run's settings before anything expensive starts (clear errors, exit 1).

`check_run(model_dir, task_feature_lengths)`: TASK_FEATURE_LENGTHS has positive "inputs" and
"targets"; MODEL_DIR is writable (a probe file is created and removed); a gs:// MODEL_DIR
needs Google Cloud credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default
file, or a Google Compute Engine / TPU VM with its metadata server), checked locally so a
machine without them fails at once instead of retrying the metadata server.
"""
from __future__ import annotations

import os
import uuid
from typing import Mapping

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
