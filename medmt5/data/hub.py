"""Hugging Face hub ids as checkpoint paths: `google/mt5-small`, `hf://google/mt5-small`,
`HiTZ/Medical-mT5-large@<revision>` (a branch, tag or commit sha).

`resolve_checkpoint(path)` turns a hub id into the local snapshot folder of the hub cache
(downloading only config.json, the weights and the tokenizer files when the network is
allowed) and leaves every other path alone (local paths made absolute, gs:// untouched).
The folder holds the checkpoint's own spiece.model, so the vocabulary can be read from it.

The cache is huggingface_hub's: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub,
laid out as models--{org}--{name}/{refs/<branch>, snapshots/<sha>/<files>, blobs/<etag>}
(huggingface_hub docs, "Understand caching": https://huggingface.co/docs/huggingface_hub/guides/manage-cache).
HF_HUB_OFFLINE=1 reads only that cache. The variables are read at each call, not at import.

A local folder wins over a hub id of the same spelling (`./google/mt5-small` exists -> local).

Datasets (`resolve_data_dir`): where a setting names a data folder (benchmark dir, ProMoT
dir, one benchmark source), `OWNER/NAME[@rev]` or huggingface_hub's file-system URL
`hf://datasets/OWNER/NAME[@rev][/sub/folder]` is a dataset repository, resolved to its
snapshot folder in the same cache (datasets--OWNER--NAME/snapshots/<sha>/...).
"""
from __future__ import annotations

import os
import re
from urllib.parse import unquote

from medmt5.data import paths

HF_SCHEME = "hf://"
# What a model checkpoint needs: config, weights (single or sharded safetensors, or torch),
# and the tokenizer files (spiece.model; added tokens of fine-tuned releases).
CHECKPOINT_PATTERNS = (
    "config.json", "generation_config.json", "model.safetensors", "model-*.safetensors",
    "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model-*.bin",
    "pytorch_model.bin.index.json", "spiece.model", "tokenizer.json", "tokenizer_config.json",
    "added_tokens.json", "special_tokens_map.json",
)
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_ID_RE = re.compile(rf"^({_NAME}/{_NAME})(?:@([A-Za-z0-9._/-]+))?$")
_TRUE = ("1", "true", "yes", "on")


class HubError(ValueError):
    """A hub id that cannot be resolved (not cached offline, unknown repo, bad revision)."""


def is_hub_id(path) -> bool:
    """True for hf://org/name[@rev], and for org/name[@rev] that is not an existing local path."""
    path = os.fspath(path)
    if path.startswith(HF_SCHEME):
        return True
    if paths.scheme(path) or path.startswith(("/", ".", "~")):
        return False
    if os.path.exists(path):
        return False
    return bool(_ID_RE.match(path))


def parse_hub_id(path) -> tuple[str, str | None]:
    """'hf://google/mt5-small@abc' -> ('google/mt5-small', 'abc'); revision None = main."""
    path = os.fspath(path)
    spec = path[len(HF_SCHEME):] if path.startswith(HF_SCHEME) else path
    m = _ID_RE.match(spec.rstrip("/"))
    if not m:
        raise HubError(f"{path!r}: not a Hugging Face model id; write org/name, hf://org/name "
                       "or org/name@revision (e.g. google/mt5-small@main)")
    return m.group(1), m.group(2)


def hub_cache_dir() -> str:
    """huggingface_hub's model cache folder, from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _not_local(path) -> str:
    """The message's last sentence: a bare org/name might have been meant as a local folder."""
    path = os.fspath(path)
    if path.startswith(HF_SCHEME):
        return "."
    return f". If you meant a local folder: {os.path.abspath(path)} does not exist"


def _snapshot(path, repo_id: str, revision: str | None, *, dataset: bool, cache: str,
              download: str, allow_patterns) -> str:
    """snapshot_download of a model or dataset repository into `cache`; every way it can
    fail is a HubError naming the repository (`download`: how to fetch it by hand)."""
    label = "dataset " if dataset else ""
    try:
        from huggingface_hub import errors as hf_errors  # lazy: needed only for hub ids
        from huggingface_hub import snapshot_download  # lazy: needed only for hub ids
    except ImportError:
        raise HubError(f"{path}: {'dataset' if dataset else 'hub'} ids need huggingface_hub "
                       "(pip install huggingface_hub), or pass a local folder") from None
    shown = label + (f"{repo_id}@{revision}" if revision else repo_id)
    try:
        return snapshot_download(repo_id, repo_type="dataset" if dataset else None,
                                 revision=revision, cache_dir=cache,
                                 local_files_only=offline(), allow_patterns=allow_patterns)
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as e:
        why = ("HF_HUB_OFFLINE=1 forbids downloading" if offline()
               else f"it could not be downloaded ({type(e).__name__})")
        raise HubError(f"{shown}: not in the Hugging Face cache {cache} and {why}; {download}"
                       f"{_not_local(path)}") from None
    except hf_errors.RevisionNotFoundError:
        raise HubError(f"{shown}: revision {revision!r} does not exist on the hub") from None
    except hf_errors.RepositoryNotFoundError:
        raise HubError(f"{label}{repo_id}: no such {'dataset' if dataset else 'model'} on the "
                       "hub (or it is private: run `hf auth login`)") from None
    except (OSError, ValueError) as e:
        raise HubError(f"{shown}: cannot resolve from the hub cache {cache}: {e}") from None


def resolve_hub_id(path, patterns=CHECKPOINT_PATTERNS) -> str:
    """The local snapshot folder for a hub id (see the module docstring). Raises HubError."""
    repo_id, revision = parse_hub_id(path)
    cache = hub_cache_dir()
    download = (f"on a machine with network access run `hf download {repo_id}"
                f"{' --revision ' + revision if revision else ''} --include '*.json' "
                "--include '*.safetensors' --include spiece.model` with the same HF_HOME "
                f"(or copy {cache}/models--{repo_id.replace('/', '--')} here)")
    folder = _snapshot(path, repo_id, revision, dataset=False, cache=cache, download=download,
                       allow_patterns=list(patterns))
    if not os.path.isfile(os.path.join(folder, "config.json")):
        shown = f"{repo_id}@{revision}" if revision else repo_id
        raise HubError(f"{shown}: snapshot {folder} has no config.json; the cached copy is "
                       f"incomplete: {download}")
    return folder


def resolve_checkpoint(path) -> str:
    """Hub id -> local snapshot folder; any other path -> paths.normalize(path)."""
    if is_hub_id(path):
        return resolve_hub_id(path)
    return paths.normalize(path)


DATASETS_SCHEME = "hf://datasets/"
# A revision with slashes is URL-encoded, as HfFileSystem writes it: @refs%2Fconvert%2Fparquet
_DATASET_URL_RE = re.compile(rf"^({_NAME}/{_NAME})(?:@([A-Za-z0-9._%-]+))?(?:/(.*))?$")


def is_dataset_ref(path) -> bool:
    """True for hf://datasets/OWNER/NAME[@rev][/sub], and for OWNER/NAME[@rev] (or
    hf://OWNER/NAME) that is not an existing local path."""
    if path is None:
        return False
    path = os.fspath(path)
    return path.startswith(DATASETS_SCHEME) or is_hub_id(path)


def parse_dataset_ref(path) -> tuple[str, str | None, str]:
    """'hf://datasets/HiTZ/x@v1/en' -> ('HiTZ/x', 'v1', 'en'); 'HiTZ/x' -> ('HiTZ/x', None, '')."""
    path = os.fspath(path)
    if path.startswith(DATASETS_SCHEME):
        m = _DATASET_URL_RE.match(path[len(DATASETS_SCHEME):].rstrip("/"))
        if not m:
            raise HubError(f"{path!r}: not a Hugging Face dataset URL; write "
                           "hf://datasets/OWNER/NAME[@revision][/folder]")
        sub = m.group(3) or ""
        if sub and any(part in ("", ".", "..") for part in sub.split("/")):
            raise HubError(f"{path!r}: the folder {sub!r} inside the dataset must be a plain "
                           "relative path (no '.', '..' or '//')")
        return m.group(1), unquote(m.group(2)) if m.group(2) else None, sub
    repo_id, revision = parse_hub_id(path)
    return repo_id, revision, ""


def resolve_dataset(path) -> str:
    """The local folder of a dataset reference (module docstring): the snapshot folder of
    the hub cache, or the sub-folder the URL names in it. Raises HubError naming the id and
    the `hf download ... --repo-type dataset` command when it is not cached offline."""
    repo_id, revision, sub = parse_dataset_ref(path)
    cache = hub_cache_dir()
    rev = f" --revision {revision}" if revision else ""
    include = f" --include '{sub}/*'" if sub else ""
    download = (f"on a machine with network access run `hf download {repo_id} --repo-type "
                f"dataset{rev}{include}` with the same HF_HOME (or copy "
                f"{cache}/datasets--{repo_id.replace('/', '--')} here)")
    folder = _snapshot(path, repo_id, revision, dataset=True, cache=cache, download=download,
                       allow_patterns=[f"{sub}/*"] if sub else None)
    target = os.path.join(folder, *sub.split("/")) if sub else folder
    if not os.path.isdir(target):
        shown = f"{repo_id}@{revision}" if revision else repo_id
        raise HubError(f"dataset {shown}: the cached snapshot {folder} has no folder "
                       f"{sub!r}; {download}")
    return target


def resolve_data_dir(path):
    """Dataset reference -> local snapshot folder; anything else (None, local, gs://) as is."""
    return resolve_dataset(path) if is_dataset_ref(path) else path
