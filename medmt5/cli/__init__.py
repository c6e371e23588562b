"""The command lines and their gin glue (T5X conventions). `python -m medmt5.train` etc.
run these through the thin modules at the top of the package.

    train       pretraining / fine-tuning          eval   score a checkpoint
    infer       predictions as JSONL               convert  HF / T5X <-> medmt5 checkpoints
    check_data  check a run's data before it runs  demo   the whole pipeline on CPU
    gin_utils   gin files and macros, registration of the library's configurables, run_cli
    cli_flags   the absl flags (--gin_file, --gin.NAME=VALUE, ...) and their errors
    gin_errors  messages for gin mistakes (missing macros, syntax errors by file and line)
"""
