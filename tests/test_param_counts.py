"""Parameter counts of gin/models/mt5_*.gin, from abstract shapes (jax.eval_shape, no memory).

Formula (H d_model, F d_ff, K = heads * d_kv, V vocab, N heads, B buckets):
  embedding V*H + untied LM head H*V
  + encoder layers * (4*H*K attention + 3*H*F gated MLP + 2*H norms)
  + decoder layers * (8*H*K self+cross attention + 3*H*F + 3*H norms)
  + 2*H final norms + 2*N*B relative-bias tables (one per stack).
HF `MT5ForConditionalGeneration` counts (google/mt5-*) are the published totals below.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.model.config import T5Config
from medmt5.model.transformer import Transformer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ("tiny", "small", "base", "large", "xl", "xxl")
HF_COUNTS = {
    "small": 300_176_768,
    "base": 582_401_280,
    "large": 1_229_581_312,
    "xl": 3_742_619_648,
    "xxl": 12_921_057_280,
}

# Run gin in a subprocess: registering T5Config in this process would clash with the CLI's
# own registration (medmt5.cli.gin_utils) when the whole suite runs in one interpreter.
_GIN_SCRIPT = r"""
import json, sys
import gin
from medmt5.model.config import T5Config
gin.external_configurable(T5Config, name="T5Config")

@gin.configurable
def model_config_holder(config=gin.REQUIRED):
    return config

out = {}
for size in sys.argv[2:]:
    gin.clear_config()
    gin.parse_config_file(f"{sys.argv[1]}/gin/models/mt5_{size}.gin")
    gin.parse_config("model_config_holder.config = %MODEL_CONFIG")
    cfg = model_config_holder()
    assert isinstance(cfg, T5Config), type(cfg)
    out[size] = cfg.to_dict()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def gin_configs():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", _GIN_SCRIPT, REPO, *SIZES], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {size: T5Config.from_dict(d, source=f"mt5_{size}.gin") for size, d in data.items()}


def formula_count(cfg: T5Config) -> int:
    h, f, k, v = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv, cfg.vocab_size
    enc_layer = 4 * h * k + 3 * h * f + 2 * h
    dec_layer = 8 * h * k + 3 * h * f + 3 * h
    head = 0 if cfg.tie_word_embeddings else h * v
    return (v * h + head + cfg.num_encoder_layers * enc_layer + cfg.num_decoder_layers * dec_layer
            + 2 * h + 2 * cfg.num_heads * cfg.relative_attention_num_buckets)


def abstract_count(cfg: T5Config) -> int:
    model = Transformer(cfg)
    tokens = jnp.ones((1, 4), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, tokens,
                                               enable_dropout=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


def test_gin_sizes_match_reference(gin_configs):
    expect = {  # d_model, d_ff, heads, layers (mT5 model cards); d_kv 64, vocab 250,112
        "small": (512, 1024, 6, 8), "base": (768, 2048, 12, 12), "large": (1024, 2816, 16, 24),
        "xl": (2048, 5120, 32, 24), "xxl": (4096, 10240, 64, 24)}
    for size, (d, f, n, layers) in expect.items():
        cfg = gin_configs[size]
        assert (cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.num_encoder_layers,
                cfg.num_decoder_layers) == (d, f, n, layers, layers), size
        assert (cfg.d_kv, cfg.vocab_size, cfg.tie_word_embeddings) == (64, 250_112, False), size
        assert (cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance) == (32,
                                                                                             128)
    tiny = gin_configs["tiny"]
    assert (tiny.vocab_size, tiny.d_model, tiny.d_kv, tiny.num_heads, tiny.d_ff,
            tiny.num_encoder_layers, tiny.num_decoder_layers) == (2176, 128, 32, 4, 256, 2, 2)


@pytest.mark.parametrize("size", sorted(HF_COUNTS))
def test_param_count_equals_formula_and_hf(gin_configs, size):
    cfg = gin_configs[size]
    count = abstract_count(cfg)
    assert count == formula_count(cfg)
    assert count == HF_COUNTS[size]


def test_tiny_and_scanned_and_tied_counts(gin_configs):
    tiny = gin_configs["tiny"]
    assert abstract_count(tiny) == formula_count(tiny) == 1_345_280
    assert abstract_count(tiny.replace(scan_layers=True)) == formula_count(tiny)
    tied = tiny.replace(tie_word_embeddings=True)
    assert abstract_count(tied) == formula_count(tied) == formula_count(tiny) - 2176 * 128
