"""Decoding with the soft prompt attached (the fine-tuned task) or removed (everything else).

    seqs, scores = generate_promot(cfg, params, batch, mode="attached")   # prompt in front
    seqs, scores = generate_promot(cfg, params, batch, mode="removed")    # plain backbone
Multi-task ProMoT: a prompt table [N, P, H] (`stack_prompts`), one row per example picked by
task_ids [B] (`select_prompts`), all in one mixed batch. ProMoT + 1-shot needs nothing here:
the `*_1shot` tasks put the demonstration text in front of the query, and the prompt is
prepended to those tokens, so the encoder reads [prompt; demonstration; query].
Everything goes through `medmt5.decoding.sampling.generate` on the backbone (`prompt=` argument).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from medmt5.checkpointing.checkpoint_io import load_checkpoint
from medmt5.decoding import sampling as decoding
from medmt5.model.transformer import Transformer
from prompt_tuning.initializers import load_npy
from prompt_tuning.prompts import PARAM_NAME

PROMPT_MODES = ("attached", "removed")


def split_prompt(params: Mapping[str, Any]):
    """(backbone params without "prompt", the stored prompt array or None)."""
    backbone = {k: v for k, v in params.items() if k != "prompt"}
    prompt = params["prompt"][PARAM_NAME] if "prompt" in params else None
    return backbone, prompt


def stack_prompts(prompts: Sequence[Any]) -> np.ndarray:
    """Prompt table [N, P, H] from N prompts ([P, H] arrays or .npy paths), in task-id order."""
    arrays = [load_npy(p) if isinstance(p, str) else np.asarray(p, np.float32) for p in prompts]
    if not arrays:
        raise ValueError("stack_prompts: no prompts given.")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise ValueError(f"stack_prompts: every prompt must be [P, H] with the same P and H; "
                         f"got shapes {[a.shape for a in arrays]}.")
    return np.stack(arrays)


def select_prompts(table, task_ids) -> jnp.ndarray:
    """table [N, P, H], task_ids [B] (0 <= id < N) -> each example's prompt [B, P, H]."""
    table = jnp.asarray(table)
    ids = np.asarray(task_ids)
    if table.ndim != 3:
        raise ValueError(f"select_prompts: table must be [N, P, H], got {table.shape}.")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"select_prompts: task_ids must be int [B], got {ids.dtype} {ids.shape}.")
    bad = ids[(ids < 0) | (ids >= table.shape[0])]
    if bad.size:
        raise ValueError(f"select_prompts: task ids {sorted(set(bad.tolist()))} are outside "
                         f"the table's {table.shape[0]} prompts.")
    return jnp.take(table, jnp.asarray(ids, jnp.int32), axis=0)


def resolve_prompt(params: Mapping[str, Any], prompt=None, task_ids=None):
    """The prompt to prepend: `prompt` (array, .npy path or table) if given, else the one
    stored in params; a table [N, P, H] is indexed by task_ids -> [B, P, H]."""
    _, stored = split_prompt(params)
    if isinstance(prompt, str):
        prompt = load_npy(prompt)
    prompt = stored if prompt is None else prompt
    if prompt is None:
        raise ValueError("mode='attached' needs a prompt: these params have no "
                         "params['prompt'] and no prompt= (array or .npy path) was given.")
    prompt = jnp.asarray(prompt)
    if prompt.ndim == 3 and task_ids is not None:
        return select_prompts(prompt, task_ids)
    if prompt.ndim == 3:
        raise ValueError(f"the prompt is a table of {prompt.shape[0]} task prompts: pass "
                         "task_ids [B] to pick one per example.")
    if task_ids is not None:
        raise ValueError("task_ids given but the prompt is a single [P, H] prompt.")
    return prompt


def generate_promot(config, params: Mapping[str, Any], batch: Mapping[str, Any], *,
                    mode: str = "attached", prompt=None, task_ids=None, **generate_kwargs):
    """Decodes `batch` with the backbone, the prompt attached or removed.

    params: a prompt-tuning tree (backbone + params["prompt"]) or a plain backbone tree;
    prompt: overrides the stored one ([P, H], a table [N, P, H] with task_ids [B], or a .npy
    path). generate_kwargs go to `medmt5.decoding.sampling.generate` (method, beam_size,
    max_decode_length, ...). Returns (sequences [B, L], scores [B]).
    """
    if mode not in PROMPT_MODES:
        raise ValueError(f"mode={mode!r}; use one of {PROMPT_MODES}.")
    backbone_params, _ = split_prompt(params)
    model = Transformer(config)
    if mode == "removed":
        if prompt is not None or task_ids is not None:
            raise ValueError("mode='removed' decodes without any prompt; drop prompt=/task_ids=.")
        return decoding.generate(model, backbone_params, batch, **generate_kwargs)
    return decoding.generate(model, backbone_params, batch,
                             prompt=resolve_prompt(params, prompt, task_ids), **generate_kwargs)


def prompted_logits(config, params: Mapping[str, Any], batch: Mapping[str, Any], *,
                    prompt=None, task_ids=None, enable_dropout: bool = False):
    """Teacher-forced float32 logits [B, T, V] with the prompt attached (scoring)."""
    backbone_params, _ = split_prompt(params)
    p = resolve_prompt(params, prompt, task_ids)
    model = Transformer(config)
    tokens = jnp.asarray(batch["encoder_input_tokens"])
    variables = {"params": backbone_params}
    embedded = model.apply(variables, tokens, method=model.embed)       # [B, T, H]
    p = jnp.broadcast_to(p, (tokens.shape[0],) + p.shape[-2:]) if p.ndim == 2 else p
    embedded = jnp.concatenate([p.astype(embedded.dtype), embedded], axis=1)   # [B, P+T, H]
    mask = jnp.concatenate([jnp.ones(p.shape[:2], bool), tokens > 0], axis=1)  # [B, P+T]
    encoded = model.apply(variables, tokens, enable_dropout=enable_dropout,
                          input_embeddings=embedded, input_mask=mask, method=model.encode)
    return model.apply(variables, encoded, mask, batch["decoder_input_tokens"],
                       batch.get("decoder_target_tokens"), enable_dropout=enable_dropout,
                       method=model.decode)


def prompt_from_checkpoint(path: str, step: int | None = None) -> np.ndarray:
    """The params["prompt"] array of a prompt-tuning checkpoint (MODEL_DIR, MODEL_DIR/best)."""
    _, params = load_checkpoint(path, step=step)
    _, prompt = split_prompt(params)
    if prompt is None:
        raise ValueError(f"{path}: the checkpoint has no params['prompt'] (not a prompt-tuning "
                         "run); pass a prompt .npy instead.")
    return np.asarray(prompt, np.float32)
