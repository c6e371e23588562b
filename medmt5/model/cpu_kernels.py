"""A hand-written CPU kernel for the few-row products of a decoding step (XLA FFI).

    from medmt5.model import cpu_kernels
    cpu_kernels.available()                 # builds / loads it once; False -> why_unavailable()
    with cpu_kernels.small_rows_products():  # trace-time switch, used by decoding.generate
        y = layers.project(x, kernel, jnp.float32)   # 2..8 rows -> the kernel

A decoding step multiplies B (greedy) or B x k (beam) rows against every weight matrix: a
pass over the weights with a handful of FMAs per weight. XLA CPU gives these products to
Eigen, which streams them at 10-17 GB/s on one core; `small_rows_matmul.cc` reads each
weight once, row-major, with the columns split across the intra-op thread pool, at 20-34
GB/s on the 2-core machine we measure on (docs/performance.md). It is used only inside
`small_rows_products()` (the CPU decoding jit), for float32 products with SMALL_ROWS_MIN ..
SMALL_ROWS_MAX rows; training, the encoder and other backends never see it.

The library is compiled from the source shipped in `medmt5/model/csrc/` on first use with
the system C++ compiler (`$CXX`, else c++ / g++ / clang++; the XLA FFI headers come with
jaxlib) into `$MEDMT5_KERNEL_CACHE` (default ~/.cache/medmt5/kernels), keyed by a hash of
the source, the flags, the compiler's path and the jaxlib version; written to a temporary
name and renamed, so concurrent processes never load a half-written file. Where it cannot
be built or run (no compiler, a CPU without AVX2/FMA, not x86-64), or with
MEDMT5_CPU_KERNELS=0, decoding uses XLA's own products: the same results within float32
rounding, slower, with one warning that says why.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib

SMALL_ROWS_MIN = 2
SMALL_ROWS_MAX = 8
TARGET = "medmt5_small_rows_matmul"
SOURCE = Path(__file__).with_name("csrc") / "small_rows_matmul.cc"
ENV_SWITCH = "MEDMT5_CPU_KERNELS"
ENV_CACHE = "MEDMT5_KERNEL_CACHE"
CXX_FLAGS = ("-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-w")

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {"checked": False, "library": None, "reason": None, "warned": False}
_registered: list = []  # the library registered with XLA in this process, once
_switch = threading.local()


class KernelBuildError(RuntimeError):
    """The kernel library could not be compiled or loaded; the message says why."""


def cache_dir() -> Path:
    """Where built libraries are kept: $MEDMT5_KERNEL_CACHE, else $XDG_CACHE_HOME/medmt5/
    kernels, else ~/.cache/medmt5/kernels."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medmt5" / "kernels"


def compiler() -> str | None:
    """The C++ compiler used: $CXX if set, else the first of c++, g++, clang++ on PATH."""
    if os.environ.get("CXX"):
        return os.environ["CXX"]
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def cpu_supported() -> tuple[bool, str]:
    """(True, "") on an x86-64 CPU with AVX2 and FMA (read from /proc/cpuinfo), else
    (False, the reason)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return False, f"the kernel is written for x86-64 with AVX2/FMA; this CPU is {machine}"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False, "cannot read /proc/cpuinfo to check for AVX2 and FMA"
    missing = [f for f in ("avx2", "fma") if f not in flags]
    if missing:
        return False, f"this CPU lacks {' and '.join(missing)}"
    return True, ""


def build(directory: str | os.PathLike | None = None) -> Path:
    """Compile the kernel library (or reuse the one already built for this source, flags,
    compiler and jaxlib) and return its path. Raises KernelBuildError with the compiler's
    output when it fails."""
    cxx = compiler()
    if cxx is None:
        raise KernelBuildError("no C++ compiler found (install g++ or set CXX)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join(
        [source, " ".join(CXX_FLAGS).encode(), cxx.encode(), jaxlib.__version__.encode()]))
    directory = Path(directory) if directory is not None else cache_dir()
    target = directory / f"small_rows_matmul-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=directory)
        os.close(fd)
    except OSError as e:
        raise KernelBuildError(f"cannot write to the kernel cache {directory} ({e}); set "
                               f"{ENV_CACHE} to a writable folder") from e
    cmd = [cxx, *CXX_FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    log.info("building the CPU decoding kernel once for this machine: %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise KernelBuildError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                                   f"{done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"running {cxx} failed: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def available() -> bool:
    """True when the kernel is built, loaded and registered with XLA for the CPU backend
    (done once per process). False when switched off (MEDMT5_CPU_KERNELS=0) or when it
    cannot be built or run here: `why_unavailable()` says why, and a warning says it once."""
    if _state["checked"]:
        return _state["library"] is not None
    with _lock:
        if not _state["checked"]:
            _load()
            _state["checked"] = True
    if _state["library"] is None and not _state["warned"]:
        _state["warned"] = True
        warnings.warn(f"medmt5: the CPU decoding kernel is not used: {_state['reason']}. "
                      "Decoding uses XLA's own products (same results, slower on CPU); "
                      f"{ENV_SWITCH}=0 turns the kernel off without this warning.",
                      RuntimeWarning, stacklevel=2)
    return _state["library"] is not None


def why_unavailable() -> str | None:
    """The reason `available()` returned False (None if it is available or not checked)."""
    return _state["reason"]


def _load() -> None:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        _state.update(reason=f"switched off by {ENV_SWITCH}=0", warned=True)  # asked for
        return
    ok, why = cpu_supported()
    if not ok:
        _state["reason"] = why
        return
    if _registered:  # registered earlier in this process (XLA keeps one handler per name)
        _state["library"] = _registered[0]
        return
    try:
        library = ctypes.cdll.LoadLibrary(str(build()))
        handler = library.MedMt5SmallRowsMatmul
        # start the CPU backend first: a registration made before it exists is deferred to
        # its start-up, where a failure could not fall back any more
        jax.devices("cpu")
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    except KernelBuildError as e:
        _state["reason"] = str(e)
        return
    except Exception as e:  # any failure to load or register: XLA's products instead
        _state["reason"] = f"{type(e).__name__}: {e}"
        return
    _registered.append(library)
    _state["library"] = library


def _reset_for_tests() -> None:
    """Forget the load result (the XLA registration, and the library behind it, stay for the
    process); tests only."""
    with _lock:
        _state.update(checked=False, library=None, reason=None, warned=False)


@contextlib.contextmanager
def small_rows_products(enabled: bool = True):
    """While tracing inside this context, `layers.project` sends float32 products with
    SMALL_ROWS_MIN..SMALL_ROWS_MAX rows to the kernel (if `enabled` and `available()`)."""
    previous = getattr(_switch, "on", False)
    _switch.on = bool(enabled) and available()
    try:
        yield
    finally:
        _switch.on = previous


def takes(x2, w) -> bool:
    """Whether `layers.project` hands this [rows, in] @ [in, out] product to the kernel."""
    return (getattr(_switch, "on", False)
            and SMALL_ROWS_MIN <= x2.shape[0] <= SMALL_ROWS_MAX
            and x2.dtype == jnp.float32 and w.dtype == jnp.float32)


def small_rows_matmul(x2, w):
    """float32 [M, K] @ [K, N] -> [M, N] by the kernel (`available()` must be True)."""
    if x2.ndim != 2 or w.ndim != 2 or x2.shape[1] != w.shape[0]:
        raise ValueError(f"small_rows_matmul: expected [M, K] @ [K, N], got {x2.shape} @ "
                         f"{w.shape}.")
    out = jax.ShapeDtypeStruct((x2.shape[0], w.shape[1]), jnp.float32)
    return jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")(
        x2.astype(jnp.float32), w.astype(jnp.float32))
