"""medmt5: Medical mT5 continued pretraining, fine-tuning and ProMoT in JAX/Flax.

The top-level names are imported lazily so that `import medmt5` stays cheap and never pulls
TensorFlow or seqio (the model and trainer must run where only jax/flax/optax exist).
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "T5Config": ("medmt5.model.config", "T5Config"),
    "Transformer": ("medmt5.model.transformer", "Transformer"),
    "load_checkpoint": ("medmt5.checkpointing.checkpoint_io", "load_checkpoint"),
    "save_hf": ("medmt5.checkpointing.hf_io", "save_hf"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'medmt5' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
