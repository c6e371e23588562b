"""One path layer for checkpoints, MODEL_DIR, exports, data files and vocabularies.

A path is either local (`/x`, `~/x`, `x`) or a URL with a scheme (`gs://bucket/x`, and any
other scheme `etils.epath` serves: s3://, az://, ...). Local paths go through `os` exactly as
before; URLs go through `etils.epath`, which uses TensorFlow's `tf.io.gfile` when TensorFlow
is installed and fsspec (`gcsfs` for gs://) otherwise, so the model and checkpoint code never
needs TensorFlow. Set EPATH_USE_TF=false to force fsspec/gcsfs. Array data inside orbax and
T5X checkpoints is read and written by tensorstore, which has its own gcs driver.

Emulators (tests/test_remote.py): gcsfs honours STORAGE_EMULATOR_HOST, tensorstore honours
TENSORSTORE_GCS_HTTP_URL (+ GOOGLE_AUTH_TOKEN_FOR_TESTING). TensorFlow's GCS client has its
endpoints compiled in (https://www.googleapis.com/storage/v1/), so it cannot reach an emulator.

Object stores have no atomic rename and no append: `rename` copies then deletes, and
`append_text` rewrites the object. Hub ids (google/mt5-small, hf://...) are not paths: resolve
them first with `medmt5.data.hub.resolve`.
"""
from __future__ import annotations

import builtins
import contextlib
import glob as _glob
import io
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO

_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def scheme(path) -> str:
    """'gs' for gs://b/x, '' for a local path."""
    m = _SCHEME_RE.match(os.fspath(path))
    return m.group(1).lower() if m else ""


def is_remote(path) -> bool:
    s = scheme(path)
    return bool(s) and s != "file"


def normalize(path) -> str:
    """Local: absolute with ~ expanded (file:// stripped). Remote: the URL without trailing '/'."""
    path = os.fspath(path)
    if scheme(path) == "file":
        path = path[len("file://"):]
    if is_remote(path):
        head, rest = path.split("://", 1)
        return f"{head}://{posixpath.normpath(rest) if rest.strip('/') else rest}".rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def _epath(path):
    from etils import epath  # lazy: only remote paths need etils (and gcsfs / TensorFlow)

    return epath.Path(path)


def join(path, *parts) -> str:
    path = os.fspath(path)
    if is_remote(path):
        return posixpath.join(path, *[os.fspath(p) for p in parts])
    return os.path.join(path, *parts)


def dirname(path) -> str:
    path = os.fspath(path)
    if is_remote(path):
        head, rest = path.rstrip("/").split("://", 1)
        return f"{head}://{posixpath.dirname(rest)}"
    return os.path.dirname(path)


def basename(path) -> str:
    path = os.fspath(path)
    return posixpath.basename(path.rstrip("/")) if is_remote(path) else os.path.basename(path)


def exists(path) -> bool:
    return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path) -> bool:
    return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def isfile(path) -> bool:
    return _epath(path).is_file() if is_remote(path) else os.path.isfile(path)


def listdir(path) -> list[str]:
    """Names (not paths) of the entries of a directory; [] when it does not exist."""
    if is_remote(path):
        p = _epath(path)
        return sorted(c.name for c in p.iterdir()) if p.is_dir() else []
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def makedirs(path) -> None:
    if is_remote(path):
        _epath(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def getsize(path) -> int:
    return int(_epath(path).stat().length) if is_remote(path) else os.path.getsize(path)


def open(path, mode: str = "r", encoding=None) -> IO:  # noqa: A001 - mirrors builtins.open
    """builtins.open for local paths; epath's open (modes r, w, rb, wb) for URLs.

    `encoding` as builtins.open (local); a remote text file is always UTF-8 (only
    UTF-8 is accepted, as etils.epath does)."""
    if not is_remote(path):
        return builtins.open(path, mode, encoding=encoding)
    if "a" in mode:
        raise ValueError(f"{path}: object stores cannot append; use paths.append_text")
    if encoding and encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise ValueError(f"{path}: remote files are read as UTF-8, not {encoding}")
    if "b" in mode:
        return _epath(path).open(mode)
    return io.TextIOWrapper(_epath(path).open(mode + "b"), encoding="utf-8")


def glob(folder, pattern: str) -> list[str]:
    """Sorted paths under `folder` that match `pattern` (`*`, `?`, `[...]` per path
    component, e.g. "train-*.parquet" or "*/train/*.parquet"); [] when none or no folder.
    Remote folders are listed through etils.epath (gcsfs's glob for gs://)."""
    if not is_remote(folder):
        return sorted(_glob.glob(os.path.join(folder, pattern)))
    base = _epath(folder)
    if not base.is_dir():
        return []
    root = os.fspath(folder).rstrip("/")
    found = []
    for p in base.glob(pattern):
        rel = posixpath.relpath(os.fspath(p).split("://", 1)[1], root.split("://", 1)[1])
        found.append(f"{root}/{rel}")
    return sorted(found)


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text(path) -> str:
    with open(path, "r") as f:
        return f.read()


def write_text(path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def append_text(path, text: str) -> None:
    """Append locally; on an object store read the object and write it back with `text`."""
    if not is_remote(path):
        with builtins.open(path, "a") as f:
            f.write(text)
        return
    old = read_text(path) if exists(path) else ""
    write_text(path, old + text)


def remove(path) -> None:
    if is_remote(path):
        _epath(path).unlink()
    else:
        os.remove(path)


def rmtree(path) -> None:
    if is_remote(path):
        p = _epath(path)
        if p.exists():
            p.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def rename(src, dst) -> None:
    """os.replace locally; copy-then-delete on an object store (not atomic)."""
    if not is_remote(src) and not is_remote(dst):
        os.replace(src, dst)
        return
    if isdir(src):
        copy_tree(src, dst)
        rmtree(src)
    else:
        _copy_file(src, dst)
        remove(src)


def _copy_file(src, dst) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 24)


def copy_tree(src, dst, last=()) -> None:
    """Copy every file under directory `src` to `dst` (either may be remote). Top-level
    names in `last` are copied after everything else (the file that marks the folder as
    complete, e.g. config.json, so a reader never sees it before the weights)."""
    makedirs(dst)
    names = listdir(src)
    for name in [n for n in names if n not in last] + [n for n in names if n in last]:
        s, d = join(src, name), join(dst, name)
        if isdir(s):
            copy_tree(s, d)
        else:
            _copy_file(s, d)


@contextlib.contextmanager
def local_copy(path, names=None) -> Iterator[str]:
    """A local path with the contents of `path` for libraries that need real files
    (safetensors' mmap, torch.load, sentencepiece). Local paths are yielded as they are;
    a remote file or directory (only `names` in it, if given) is downloaded to a temporary
    directory that is removed afterwards."""
    if not is_remote(path):
        yield os.fspath(path)
        return
    tmp = tempfile.mkdtemp(prefix="medmt5-remote-")
    try:
        if isdir(path):
            if names is None:
                copy_tree(path, tmp)
            else:
                for name in names:
                    if isfile(join(path, name)):
                        _copy_file(join(path, name), os.path.join(tmp, name))
            yield tmp
        else:
            local = os.path.join(tmp, basename(path))
            _copy_file(path, local)
            yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged_upload(dst, replace: bool = False) -> Iterator[str]:
    """For writers that need real files (np.save, safetensors): yields a local temporary
    directory; on success its files are copied to the remote directory `dst` (an existing
    `dst` is removed first when `replace`), on an exception nothing is copied. Not atomic:
    an object store has no rename (the last file copied is the last name in sort order)."""
    tmp = tempfile.mkdtemp(prefix="medmt5-upload-")
    try:
        yield tmp
        if replace:
            rmtree(dst)
        copy_tree(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tensorstore_kvstore(path) -> object:
    """A tensorstore kvstore spec for a directory: {"driver": "file", ...} locally, the URL
    (gs://bucket/dir/, tensorstore's own gcs driver) for a remote path."""
    path = os.fspath(path)
    if is_remote(path):
        return path.rstrip("/") + "/"
    return {"driver": "file", "path": path}
