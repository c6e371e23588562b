"""Tiny model, batches and run helpers shared by the trainer/checkpoint/multiprocess tests."""
import jax
import numpy as np

from medmt5.model.config import T5Config
from medmt5.model.transformer import Transformer
from medmt5.training import optimizers, partitioning, train_state, trainer

B, S, T, VOCAB = 8, 12, 6, 128


def tiny_config(**overrides) -> T5Config:
    fields = dict(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_heads=4,
                  num_encoder_layers=1, num_decoder_layers=1,
                  relative_attention_num_buckets=8, relative_attention_max_distance=16)
    fields.update(overrides)
    return T5Config(**fields)


def make_batch(seed: int, batch_size: int = B) -> dict:
    """Feature-converter-like batch with some target padding (weights 0)."""
    rs = np.random.RandomState(seed)
    enc = rs.randint(2, VOCAB, (batch_size, S)).astype(np.int32)
    enc[:, -2:] = 0
    tgt = rs.randint(2, VOCAB, (batch_size, T)).astype(np.int32)
    lengths = rs.randint(3, T + 1, batch_size)
    tgt[np.arange(T)[None, :] >= lengths[:, None]] = 0
    dec_in = np.concatenate([np.zeros((batch_size, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def make_mesh(shape):
    devices = jax.devices()[:shape[0] * shape[1]]
    return partitioning.create_mesh(mesh_shape=shape, devices=devices)


def make_optimizer(model, mask=None):
    return optimizers.create_optimizer("adafactor", optimizers.make_schedule(
        "rsqrt", 0.05, warmup_steps=2), mask=mask,
        factor_rules=optimizers.model_factor_rules(model))


def host_params(model, seed=0):
    """Random params built on the host (numpy): skips compiling the random initialiser."""
    abstract = jax.eval_shape(
        lambda r: partitioning.unbox(train_state.init_boxed_params(model, make_batch(0), r)),
        jax.random.PRNGKey(0))
    rs = np.random.RandomState(seed)
    return jax.tree.map(lambda a: (rs.standard_normal(a.shape) * 0.3 + (a.ndim == 1))
                        .astype(a.dtype), abstract)


def create_state(mesh, model, optimizer, params=None, seed=0):
    """(state, shardings) on mesh; params default to host_params."""
    if params is None:
        params = host_params(model, seed)
    return train_state.create_train_state(model, optimizer, mesh, make_batch(0),
                                          jax.random.PRNGKey(seed), params=params)


def setup(mesh, model, optimizer=None, params=None, seed=0, **step_kw):
    """(state, shardings, step_fn, step_config) on mesh; params default to host_params."""
    optimizer = optimizer or make_optimizer(model)
    state, shardings = create_state(mesh, model, optimizer, params, seed)
    config = trainer.StepConfig(model, optimizer, **step_kw)
    return state, shardings, trainer.jit_train_step(config, mesh, shardings), config


def run(step_fn, state, mesh, steps, start=0, rng=None):
    """Runs batches start..steps-1 (each process feeds its shard); returns (state, losses)."""
    rng = jax.random.PRNGKey(1) if rng is None else rng
    info = partitioning.data_shard_info(mesh)
    per = partitioning.per_process_batch_size(B, mesh)
    losses = []
    for i in range(start, steps):
        full = make_batch(100 + i)
        local = {k: v[info.index * per:(info.index + 1) * per] for k, v in full.items()}
        state, metrics = step_fn(state, partitioning.make_global_batch(local, mesh),
                                 rng)
        losses.append(float(metrics["loss"]))
    return state, losses


def model(**overrides):
    return Transformer(tiny_config(**overrides))
