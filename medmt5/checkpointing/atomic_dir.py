"""Write all-or-nothing: a directory (built under DST.tmp-XXXX, then renamed to DST) or a
file (`atomic_write_bytes` / `_text` / `_json`: PATH.tmp-XXXX, fsync, rename).

The directories are made with mode 0777 filtered by the process umask (as `mkdir` does), not
tempfile.mkdtemp's 0700, so an export is as readable to others as anything else the user
writes (umask 022: drwxr-xr-x; umask 077: drwx------).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator

from medmt5.checkpointing.param_tree import CheckpointError
from medmt5.data import paths


def make_unique_dir(parent: str, prefix: str) -> str:
    """A new empty directory parent/prefixXXXXXXXX, created with the user's umask."""
    for _ in range(100):
        path = os.path.join(parent, prefix + secrets.token_hex(4))
        try:
            os.mkdir(path, 0o777)  # the umask applies, unlike tempfile.mkdtemp (always 0700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent}: could not create a unique directory {prefix}XXXXXXXX.")


def apply_umask(root: str, dir_mode: int) -> None:
    """Gives every directory under root `dir_mode` and every file the same bits without the
    execute ones (or with them, for files that had one): some writers (safetensors) create
    their files 0600 whatever the umask is."""
    file_mode = dir_mode & 0o666
    for d, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(d, name), dir_mode)
        for name in files:
            p = os.path.join(d, name)
            if not os.path.islink(p):
                executable = os.stat(p).st_mode & 0o111
                os.chmod(p, dir_mode if executable else file_mode)


def check_destination(dst: str, overwrite: bool) -> None:
    """Refuse a destination that is a file, or a non-empty directory unless `overwrite`.
    `dst` may be a URL (gs://...; medmt5.data.paths)."""
    if paths.isfile(dst):
        raise CheckpointError(f"{dst}: destination is an existing file; give a directory path.")
    if paths.isdir(dst) and paths.listdir(dst) and not overwrite:
        raise CheckpointError(
            f"{dst}: destination directory is not empty; choose a new path or pass --overwrite "
            "(overwrite=True) to replace it."
        )


@contextlib.contextmanager
def atomic_directory(dst: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a fresh temporary directory next to `dst`; on success it replaces `dst`.

    On any exception the temporary directory is removed and `dst` is left untouched.
    """
    dst = os.path.abspath(dst)
    check_destination(dst, overwrite)
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = make_unique_dir(parent, os.path.basename(dst) + ".tmp-")
    try:
        yield tmp
        # mkdir(0o777) gave tmp exactly the bits the umask allows; the contents follow them.
        apply_umask(tmp, stat.S_IMODE(os.stat(tmp).st_mode))
        old = None
        if os.path.isdir(dst):
            if os.listdir(dst):  # only reachable with overwrite=True
                old = make_unique_dir(parent, os.path.basename(dst) + ".old-")
                os.rename(dst, os.path.join(old, "d"))
            else:
                os.rmdir(dst)
        os.rename(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replaces file `path` with `data` all-or-nothing: a reader sees the old or the new
    content, never a mix (write PATH.tmp-XXXX, fsync, rename). Object-store URLs (gs://) go
    through medmt5.data.paths, whose single-object writes are already atomic. The new file gets
    mode 0666 filtered by the umask, like open(). The one temp-then-rename file writer."""
    if paths.is_remote(path):
        with paths.open(path, "wb") as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """atomic_write_bytes of `text` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj, **dumps_kwargs) -> None:
    """atomic_write_text of json.dumps(obj, **dumps_kwargs)."""
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs))
