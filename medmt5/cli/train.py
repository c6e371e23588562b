"""`python -m medmt5.train`: pretraining / fine-tuning, T5X command-line conventions.

    python -m medmt5.train --gin_file=medmt5_tiny.gin --gin.MODEL_DIR="'/tmp/tiny'"

The run driver is `medmt5.run.loop.train` (plain Python, re-exported here with TrainResult);
its parts are the configs of `medmt5.run.configs` (DataConfig, StepSettings, CheckpointConfig,
EvalConfig, FreezeConfig), which gin/runs/*.gin bind from the T5X macros (MODEL_DIR,
MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS, TRAIN_STEPS, BATCH_SIZE, INITIAL_CHECKPOINT_PATH,
EVAL_PERIOD, ...). It builds the mesh, the model and optimizer, restores MODEL_DIR's latest
checkpoint (or loads INITIAL_CHECKPOINT_PATH), then loops the train step, logging to a
progress bar and TensorBoard (MODEL_DIR/train), evaluating every EVAL_PERIOD steps
(MODEL_DIR/eval/<task>, best checkpoint in MODEL_DIR/best), and saving checkpoints with the
data position so a restart resumes exactly. SIGTERM saves and exits.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from medmt5.cli import gin_utils
from medmt5.run.loop import TrainResult, train
from medmt5.runtime import failures, preflight

__all__ = ["TrainResult", "train", "main", "console_main"]

log = logging.getLogger(__name__)


USAGE = __doc__


def main(argv: Sequence[str]) -> int:
    def run(flags):
        model_dir = gin_utils.query_macro("MODEL_DIR")
        hooks = []
        if model_dir:
            preflight.check_model_dir(model_dir)  # before anything is written there
            hooks.append(lambda: gin_utils.write_config(model_dir))
        result = gin_utils.call("train", ready_hooks=hooks)
        log.info("finished at step %d; last metrics %s", result.step, result.metrics)

    return gin_utils.run_cli(run, argv, "medmt5.train", USAGE)


def console_main() -> None:
    failures.exit_process(main(sys.argv[1:]))


if __name__ == "__main__":
    console_main()
