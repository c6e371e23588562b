"""SeqIO task registrations, vocabularies, preprocessors, readers and metrics for medmt5.

As seqio users expect, importing the package registers the project's tasks and mixtures
(pretraining corpus, benchmarks, ProMoT/ICL tasks) with the tiny vocabulary and the data
folders of the environment variables or the shipped samples:

    import seqio, tasks
    seqio.get_mixture_or_task("medmt5_pretrain")

`import tasks.mt5` (or `tasks.register(vocabulary="mt5")`) re-registers them with mT5's
vocabulary, `import tasks.tiny` with the tiny one; `register(...)` also takes the data
folders and the corpus options (what the CLIs' `setup_tasks` binds in gin). On a machine
without TensorFlow/seqio nothing is registered and the pure-Python modules (tasks.seqlabel,
tasks.metrics) still import.
"""
import importlib.util

ABSTRCT_MULTILINGUAL = "abstrct_neoplasm_multilingual"


def register_abstrct_multilingual() -> str:
    """The mixture of the four AbstRCT neoplasm languages (equal rates): the demo's and
    gin/finetune/abstrct_tiny.gin's fine-tuning set. Re-registered with the tasks."""
    _require_seqio("register_abstrct_multilingual")
    seqio.MixtureRegistry.remove(ABSTRCT_MULTILINGUAL)
    seqio.MixtureRegistry.add(ABSTRCT_MULTILINGUAL,
                              ["abstrct_neoplasm_en", "abstrct_neoplasm_es",
                               "abstrct_neoplasm_fr", "abstrct_neoplasm_it"], default_rate=1.0)
    return ABSTRCT_MULTILINGUAL


def register(vocabulary: str = "tiny", corpus_dir: str | None = None,
             benchmark_dir: str | None = None, promot_dir: str | None = None,
             corpus_exponent: float = 1.0,
             corpus_validation_fraction: float | None = None) -> None:
    """(Re-)registers every seqio task of the project with one vocabulary and data folders.

    vocabulary: "tiny" (the shipped 2,100-id model, for the tiny model) or "mt5" (for
    google/mt5-* and Medical mT5). Folders default to the tasks' environment variables or the
    shipped samples. corpus_validation_fraction: the share of corpus documents held out as
    the pretraining tasks' "validation" split (None: tasks.pretraining's default).
    """
    _require_seqio("register")
    pretraining.register_pretraining_tasks(
        data_dir=corpus_dir, vocabulary=vocabulary, exponent=corpus_exponent,
        validation_fraction=corpus_validation_fraction)
    benchmarks.register_benchmark_tasks(data_dir=benchmark_dir, vocabulary=vocabulary)
    register_abstrct_multilingual()
    promot_tasks.register_promot_tasks(data_dir=promot_dir, vocabulary=vocabulary)
    # the medical in-context suite (benchmark data)
    icl_medical_tasks.register_medical_icl_tasks(data_dir=benchmark_dir, vocabulary=vocabulary)


def _have_seqio() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("seqio", "tensorflow"))


def _require_seqio(name: str) -> None:
    if not HAVE_SEQIO:
        raise ModuleNotFoundError(f"tasks.{name}: registering seqio tasks needs seqio and "
                                  "TensorFlow (pip install -r requirements.txt)")


HAVE_SEQIO = _have_seqio()
if HAVE_SEQIO:
    # Importing these modules registers their tasks (tiny vocabulary, default folders), in this
    # order; they come last because they use this package's names. The pure-Python modules
    # (tasks.seqlabel, tasks.metrics) import without seqio.
    # isort: off
    import seqio  # noqa: E402
    from tasks import pretraining  # noqa: E402
    from tasks import benchmarks  # noqa: E402
    from tasks import promot_tasks  # noqa: E402
    from tasks import icl_medical_tasks  # noqa: E402
    # isort: on

    register_abstrct_multilingual()
