"""Soft prompts: the `Prompt` parameter and `PromptedTransformer`, mT5 with a prompt in front.

    model = PromptedTransformer(cfg, prompt_length=100)
    logits = model.apply({"params": params}, enc_tokens, dec_inputs, dec_targets,
                         enable_dropout=False)                    # f32 [B, T, V]

The parameter tree is the backbone's canonical tree plus params["prompt"]["embedding"]
[P, H] (logical axes "prompt_length", "prompt_embed"; replicated, not factored: the rules
this package adds to the core's, AXIS_RULES and FACTOR_RULES, which PromptedTransformer
carries as medmt5.model.protocols.AddsLogicalAxes), so a backbone checkpoint
loads unchanged with `load_initial_params(..., new_params=("prompt/.*",))`. The prompt is
prepended to the token embeddings through the backbone's `encode(input_embeddings=,
input_mask=)` hook: the encoder sees [B, P+T, H] with mask 1 on the prompt (prompt and input
attend to each other, relative positions run over P+T) and the decoder cross-attends to all
P+T positions. With num_prompts=N the prompt is a table [N, P, H] and every example picks
its row by `task_ids` [B] (multi-task ProMoT).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from medmt5.model.transformer import Transformer
from medmt5.training import optimizers
from prompt_tuning import initializers

PROMPT_AXES = ("prompt_length", "prompt_embed")
PARAM_NAME = "embedding"          # params["prompt"]["embedding"]
PROMPT_PATTERN = "prompt/.*"      # the prompt's "/"-joined path, for masks and new_params
# The prompt's additions to the core rules (prompt-tuning's `additional_rules`): replicated
# (a prompt is small) and never factored by Adafactor.
AXIS_RULES = (("prompt_length", None), ("prompt_embed", None))
FACTOR_RULES = {"prompt_length": optimizers.NONE, "prompt_embed": optimizers.NONE}


class Prompt(nn.Module):
    """The soft prompt parameter: [P, H], or a per-task table [N, P, H] when num_prompts=N."""

    length: int
    d_model: int
    init_fn: Callable | None = None   # flax initializer (rng, shape, dtype) -> array
    num_prompts: int = 0                 # 0: one prompt; N > 0: table of N prompts
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, batch_size: int, task_ids=None):
        """-> prompt embeddings [B, P, H] (task_ids [B] select rows of a table)."""
        init = self.init_fn or initializers.uniform(0.5)
        if self.num_prompts:
            shape, axes = (self.num_prompts, self.length, self.d_model), (None,) + PROMPT_AXES
        else:
            shape, axes = (self.length, self.d_model), PROMPT_AXES
        table = self.param(PARAM_NAME, nn.with_logical_partitioning(init, axes), shape,
                           self.param_dtype)
        if not self.num_prompts:
            if task_ids is not None:
                raise ValueError("task_ids given but the model has a single prompt; build it "
                                 "with num_prompts=N for a per-task prompt table.")
            return jnp.broadcast_to(table[None], (batch_size,) + shape)
        if task_ids is None and self.is_initializing():
            task_ids = jnp.zeros((batch_size,), jnp.int32)  # init: params only need shapes
        if task_ids is None:
            raise ValueError(f"this model has a table of {self.num_prompts} prompts: pass "
                             "task_ids [B] (int, one per example) to pick each example's.")
        task_ids = jnp.asarray(task_ids, jnp.int32)
        if task_ids.shape != (batch_size,):
            raise ValueError(f"task_ids must be [B={batch_size}], got {task_ids.shape}.")
        return jnp.take(table, task_ids, axis=0, mode="clip")  # [B, P, H]


class PromptedTransformer(Transformer):
    """mT5 with a soft prompt prepended to the encoder input (ProMoT / prompt tuning).

    Fields beyond `config`: prompt_length P (> 0), prompt_init (flax initializer for the
    prompt; default uniform(0.5); see prompt_tuning.initializers), num_prompts (0: one
    prompt; N: a table, pick with task_ids). `encode` / `decode` / `embed` stay the
    backbone's (so `decoding.generate(model, params, batch, prompt=...)` works unchanged);
    `__call__`, `hidden_states` and `encode_prompted` attach the prompt.
    """

    prompt_length: int = 0
    prompt_init: Callable | None = None
    num_prompts: int = 0
    # medmt5.model.protocols.AddsLogicalAxes: the core merges these into its tables
    additional_axis_rules: ClassVar[tuple] = AXIS_RULES
    additional_factor_rules: ClassVar[Mapping] = FACTOR_RULES

    def setup(self):
        super().setup()
        if self.prompt_length <= 0:
            raise ValueError(f"PromptedTransformer: prompt_length must be > 0, got "
                             f"{self.prompt_length} (PROMPT_LENGTH in gin).")
        self.prompt = Prompt(self.prompt_length, self.config.d_model, self.prompt_init,
                             self.num_prompts, self.config.parameter_dtype)

    def prompt_embeddings(self, batch_size: int, task_ids=None):
        """-> [B, P, H] in the activation dtype."""
        return self.prompt(batch_size, task_ids).astype(self.config.activation_dtype)

    def prompted_inputs(self, encoder_input_tokens, task_ids=None):
        """tokens [B, T] -> (embeddings [B, P+T, H], mask [B, P+T]: 1 on the prompt)."""
        tokens = jnp.asarray(encoder_input_tokens)
        b = tokens.shape[0]
        prompt = self.prompt_embeddings(b, task_ids)                   # [B, P, H]
        embedded = self.embed(tokens)                                  # [B, T, H]
        mask = jnp.concatenate([jnp.ones((b, self.prompt_length), bool), tokens > 0], axis=1)
        return jnp.concatenate([prompt, embedded], axis=1), mask

    def encode_prompted(self, encoder_input_tokens, encoder_segment_ids=None,
                        encoder_positions=None, enable_dropout: bool = True, task_ids=None):
        """tokens [B, T] -> (encoded [B, P+T, H], encoder mask [B, P+T])."""
        if encoder_segment_ids is not None:
            raise ValueError(
                "prompt tuning does not support packed inputs (each packed example would need "
                "its own prompt): set DataConfig.pack = False (gin/promot/*.gin do).")
        embedded, mask = self.prompted_inputs(encoder_input_tokens, task_ids)
        positions = None
        if encoder_positions is not None:  # unpacked positions: shift by P, prompt = 0..P-1
            pos = jnp.asarray(encoder_positions, jnp.int32)
            prefix = jnp.broadcast_to(jnp.arange(self.prompt_length, dtype=jnp.int32),
                                      (pos.shape[0], self.prompt_length))
            positions = jnp.concatenate([prefix, pos + self.prompt_length], axis=1)
        encoded = self.encode(encoder_input_tokens, None, positions,
                              enable_dropout=enable_dropout, input_embeddings=embedded,
                              input_mask=mask)
        return encoded, mask

    def hidden_states(self, encoder_input_tokens, decoder_input_tokens,
                      decoder_target_tokens=None, encoder_segment_ids=None,
                      decoder_segment_ids=None, encoder_positions=None, decoder_positions=None,
                      enable_dropout: bool = True, task_ids=None):
        """Final normed decoder hidden [B, T, H] with the prompt attached (chunked CE)."""
        encoded, mask = self.encode_prompted(encoder_input_tokens, encoder_segment_ids,
                                             encoder_positions, enable_dropout, task_ids)
        return self.decode(encoded, mask, decoder_input_tokens, decoder_target_tokens, None,
                           decoder_segment_ids, decoder_positions,
                           enable_dropout=enable_dropout, return_hidden=True)

    def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
                 encoder_segment_ids=None, decoder_segment_ids=None, encoder_positions=None,
                 decoder_positions=None, enable_dropout: bool = True, decode: bool = False,
                 max_decode_length: int | None = None, task_ids=None):
        """Teacher-forced float32 logits [B, T, V] with the prompt attached (T5X signature)."""
        encoded, mask = self.encode_prompted(encoder_input_tokens, encoder_segment_ids,
                                             encoder_positions, enable_dropout, task_ids)
        return self.decode(encoded, mask, decoder_input_tokens, decoder_target_tokens, None,
                           decoder_segment_ids, decoder_positions,
                           enable_dropout=enable_dropout, decode=decode,
                           max_decode_length=max_decode_length)

    @nn.nowrap
    def decoding_prompt(self, params):
        """The prompt array generation prepends ([P, H]); None for a per-task table (pick
        rows with prompt_tuning.inference.select_prompts)."""
        if self.num_prompts:
            return None
        return params["prompt"][PARAM_NAME]
