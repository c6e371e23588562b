"""Write a directory all-or-nothing: build it under DST.tmp-XXXX, then rename it to DST."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from medmt5.param_tree import CheckpointError


def check_destination(dst: str, overwrite: bool) -> None:
    """Refuse a destination that is a file, or a non-empty directory unless `overwrite`.
    `dst` may be a URL (gs://...; medmt5.paths)."""
    from medmt5 import paths

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
    tmp = tempfile.mkdtemp(prefix=os.path.basename(dst) + ".tmp-", dir=parent)
    try:
        yield tmp
        old = None
        if os.path.isdir(dst):
            if os.listdir(dst):  # only reachable with overwrite=True
                old = tempfile.mkdtemp(prefix=os.path.basename(dst) + ".old-", dir=parent)
                os.rename(dst, os.path.join(old, "d"))
            else:
                os.rmdir(dst)
        os.rename(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
