"""Where the benchmark data lives: the benchmark folder and its sources (abstrct, ner, bioasq).

The folder is the `data_dir` argument, else $MEDMT5_BENCHMARK_DIR, else the shipped samples
(tasks/data/benchmarks). It may be local, `gs://bucket/...` (any URL medmt5.data.paths reads)
or a Hugging Face dataset id (`OWNER/NAME[@rev]`, `hf://datasets/OWNER/NAME[@rev][/folder]`)
resolved from the hub cache by medmt5.data.hub (HF_HUB_OFFLINE=1 reads only the cache).
Each source is `<folder>/<source>` unless an override names another folder or dataset id:
the `sources=` argument of `tasks.benchmarks.register_benchmark_tasks`, or gin
`benchmark_sources.abstrct = 'HiTZ/multilingual-abstrct'` (the gin file needs
`import tasks.benchmarks`). Hub ids are resolved when files are read, not at registration.

tasks.benchmarks (sequence labelling) and tasks.qa (BioASQ) both read their folders here,
so neither imports the other.
"""
from __future__ import annotations

import os

import gin
from medmt5.data import hub, paths  # path layer and hub-id resolver (no model code)
from tasks.benchmark_readers import BenchmarkDataError

BENCHMARK_DIR_ENV = "MEDMT5_BENCHMARK_DIR"
DEFAULT_BENCHMARK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                     "benchmarks")
SOURCES = ("abstrct", "ner", "bioasq")

# What the tasks were last registered with: the folder as configured (a hub id unresolved)
# and the source overrides.
_REGISTERED = {"root": DEFAULT_BENCHMARK_DIR, "sources": {}}


@gin.configurable
def benchmark_sources(abstrct: str | None = None, ner: str | None = None,
                      bioasq: str | None = None) -> dict[str, str]:
    """Per-source folders that replace `<benchmark dir>/<source>`, bindable in gin: a local
    or gs:// folder, or a dataset id (`benchmark_sources.abstrct = 'HiTZ/multilingual-abstrct'`)."""
    return {k: v for k, v in (("abstrct", abstrct), ("ner", ner), ("bioasq", bioasq)) if v}


def check_sources(sources: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"benchmark sources: unknown source(s) {unknown}; expected one of "
                         f"{list(SOURCES)}")
    return dict(sources)


def set_registered(root: str, sources: dict[str, str]) -> None:
    _REGISTERED["root"], _REGISTERED["sources"] = root, check_sources(sources)


def registered_dir() -> str:
    """The folder the tasks were last registered with (register_benchmark_tasks)."""
    return _REGISTERED["root"]


def registered_sources() -> dict[str, str]:
    return dict(_REGISTERED["sources"])


def configured_dir(data_dir: str | None = None) -> str:
    """`data_dir`, else $MEDMT5_BENCHMARK_DIR, else the samples (a hub id left unresolved)."""
    return data_dir or os.environ.get(BENCHMARK_DIR_ENV) or DEFAULT_BENCHMARK_DIR


def _resolve(path: str, what: str) -> str:
    try:
        return hub.resolve_data_dir(path)
    except hub.HubError as e:
        raise BenchmarkDataError(f"{what}: {e}") from None


def benchmark_dir(data_dir: str | None = None) -> str:
    """The benchmark folder (`configured_dir`), a hub dataset id resolved to the cache."""
    return _resolve(configured_dir(data_dir), "benchmark folder")


def source_dir(root: str, source: str, sources: dict[str, str] | None = None) -> str:
    """The folder of one source ("abstrct", "ner", "bioasq"): its override (`sources`, else
    the registered ones), else `<root>/<source>`; hub dataset ids resolved to the cache."""
    if source not in SOURCES:
        raise ValueError(f"unknown benchmark source {source!r}: expected one of {SOURCES}")
    sources = _REGISTERED["sources"] if sources is None else sources
    if sources.get(source):
        return _resolve(sources[source], f"benchmark source {source}")
    return paths.join(_resolve(root, "benchmark folder"), source)
