"""What the core asks of a model beyond `Transformer`: two small, runtime-checkable protocols.

    AddsLogicalAxes  a model whose parameters use logical axis names the core rules do not
                     know; it carries the rules for them (partitioning + Adafactor factoring).
                     The core merges them in: `partitioning.model_axis_rules(model)`,
                     `optimizers.model_factor_rules(model)`.
    PromptedModel    a model with a soft prompt in front of the encoder input
                     (prompt_tuning.prompts.PromptedTransformer): the trainer takes its hidden
                     states through `hidden_states`, decoding prepends `decoding_prompt(params)`.

The core checks `isinstance(model, PromptedModel)` instead of probing attributes, and never
imports the package that implements them (prompt_tuning/ imports the core, not the reverse).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

AxisRule = tuple  # (logical axis name, mesh axis name or None)


@runtime_checkable
class AddsLogicalAxes(Protocol):
    """Class attributes: `additional_axis_rules`, ((logical name, mesh axis or None), ...),
    added to partitioning.LOGICAL_AXIS_RULES; `additional_factor_rules`, {logical name:
    optimizers.ROW / COLUMN / BATCH / NONE}, added to optimizers.FACTOR_RULES."""

    additional_axis_rules: Sequence[AxisRule]
    additional_factor_rules: Mapping[str, str | None]


@runtime_checkable
class PromptedModel(Protocol):
    """A Transformer with a soft prompt. num_prompts = 0: one prompt; N: a per-task table
    (batches carry task_ids [B])."""

    prompt_length: int
    num_prompts: int

    def hidden_states(self, encoder_input_tokens, decoder_input_tokens,
                      decoder_target_tokens=None, encoder_segment_ids=None,
                      decoder_segment_ids=None, encoder_positions=None,
                      decoder_positions=None, enable_dropout: bool = True,
                      task_ids=None) -> Any:
        """Final normed decoder hidden [B, T, H] with the prompt attached."""

    def decoding_prompt(self, params) -> Any:
        """The [P, H] prompt decoding prepends, or None for a per-task table."""


def num_prompts(model) -> int:
    """The model's prompt-table size: 0 for a single prompt or for no prompt at all."""
    return model.num_prompts if isinstance(model, PromptedModel) else 0
