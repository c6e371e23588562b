"""Multi-task ProMoT stage 2: one frozen stage-1 prompt per task, tuned on a mixture.

The per-task prompts (PROMPT_FILES, .npy [P, H], in MULTITASK_TASKS order) are stacked into
the model's prompt table params["prompt"]["embedding"] [N, P, H]; every training example
carries task_ids (its task's index in MULTITASK_TASKS, `medmt5.data.pipeline.task_id_mixture`), so a
mixed batch attaches each example's own prompt. gin: gin/promot/multitask_stage2.gin.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from prompt_tuning import inference


def _paths(prompt_files: Sequence[str]) -> list[str]:
    if isinstance(prompt_files, str) or not prompt_files:
        raise ValueError(f"PROMPT_FILES must be a non-empty list of .npy paths (one stage-1 "
                         f"prompt per task, in MULTITASK_TASKS order), got {prompt_files!r}.")
    return [str(p) for p in prompt_files]


def check_counts(prompt_files: Sequence[str], tasks: Sequence[str]) -> int:
    """N = len(PROMPT_FILES), which must equal len(MULTITASK_TASKS)."""
    paths = _paths(prompt_files)
    if len(paths) != len(tasks):
        raise ValueError(f"PROMPT_FILES has {len(paths)} prompts but MULTITASK_TASKS has "
                         f"{len(tasks)} tasks {list(tasks)}: give one prompt per task, in order.")
    return len(paths)


def prompt_table(prompt_files: Sequence[str]) -> np.ndarray:
    """The stacked prompt table [N, P, H] float32 (row i = PROMPT_FILES[i])."""
    return inference.stack_prompts(_paths(prompt_files))


class TableInitializer:
    """flax initializer of the [N, P, H] prompt table from PROMPT_FILES (read on first use)."""

    def __init__(self, prompt_files: Sequence[str]):
        self.paths = _paths(prompt_files)
        self._table = None

    def table(self) -> np.ndarray:
        if self._table is None:
            self._table = prompt_table(self.paths)
        return self._table

    def __call__(self, rng, shape, dtype=jnp.float32):
        del rng
        table = self.table()
        if tuple(table.shape) != tuple(shape):
            raise ValueError(f"PROMPT_FILES stack to {tuple(table.shape)} but the model's prompt "
                             f"table is [N, P, H] = {tuple(shape)}; check num_prompts, "
                             "PROMPT_LENGTH and the model's d_model.")
        return jnp.asarray(table, dtype)

    def __repr__(self):
        return f"TableInitializer({self.paths})"


def table_initializer(prompt_files: Sequence[str], tasks: Sequence[str] = ()) -> TableInitializer:
    """gin: prompted_model.prompt_init = @prompt_table_initializer() (checks one file per task
    when `tasks` is given)."""
    if tasks:
        check_counts(prompt_files, tasks)
    return TableInitializer(prompt_files)


def num_prompts_of(prompt_files: Sequence[str], tasks: Sequence[str]) -> int:
    """gin: prompted_model.num_prompts = @num_prompts_of()."""
    return check_counts(prompt_files, tasks)


def prompt_length_of_files(prompt_files: Sequence[str]) -> int:
    """P shared by all PROMPT_FILES (stack_prompts raises on differing shapes)."""
    return int(prompt_table(prompt_files).shape[1])
