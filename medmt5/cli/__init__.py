"""The command lines and their gin glue (T5X conventions). `python -m medmt5.train` etc.
run these through the thin modules at the top of the package.

    train       pretraining / fine-tuning          eval   score a checkpoint
    infer       predictions as JSONL               convert  HF / T5X <-> medmt5 checkpoints
    check_data  check a run's data before it runs  demo   the whole pipeline on CPU
    gin_utils   flags, gin files and macros, registration of the library's configurables
"""
