"""Regenerate tests/data/golden_hf_logits.npz (needs torch + transformers).

  .venv/bin/python tests/data/golden_make_hf_logits.py

A tiny untied mT5 (heads*d_kv != d_model, 2 encoder / 3 decoder layers, 8 buckets, max
distance 20) with random weights (layer norms too), a padded batch, and what Hugging Face
`MT5ForConditionalGeneration` computes for it: encoder output, logits and loss. The file lets
tests/test_hf_parity.py check parity where transformers is not installed.
"""
import json
import os

import numpy as np
import torch
import transformers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden_hf_logits.npz")
HF_CONFIG = dict(vocab_size=64, d_model=16, d_kv=6, d_ff=24, num_heads=3, num_layers=2,
                 num_decoder_layers=3, relative_attention_num_buckets=8,
                 relative_attention_max_distance=20, dropout_rate=0.0,
                 feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                 pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def main():
    torch.manual_seed(1234)
    config = transformers.MT5Config(**HF_CONFIG)
    model = transformers.MT5ForConditionalGeneration(config)
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.randn(64, 16) * 0.5)
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    model.eval()
    rng = np.random.default_rng(99)
    enc = rng.integers(2, 64, (3, 11)).astype(np.int32)
    tgt = rng.integers(2, 64, (3, 9)).astype(np.int32)
    for row, (n_enc, n_tgt) in enumerate([(11, 9), (6, 4), (2, 1)]):
        enc[row, n_enc:] = 0
        tgt[row, n_tgt:] = 0
    dec = np.concatenate([np.zeros((3, 1), np.int32), tgt[:, :-1]], axis=1)
    labels = np.where(tgt > 0, tgt, -100)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(enc, dtype=torch.long),
                    attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                    decoder_input_ids=torch.tensor(dec, dtype=torch.long),
                    labels=torch.tensor(labels, dtype=torch.long))
    weights = {f"w/{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()
               if not k.endswith("embed_tokens.weight")}
    saved = dict(model.config.to_dict(), tie_word_embeddings=False)
    np.savez_compressed(
        OUT, hf_config=np.array(json.dumps(saved)),
        transformers_version=np.array(transformers.__version__),
        encoder_input_tokens=enc, decoder_input_tokens=dec, decoder_target_tokens=tgt,
        encoder_output=out.encoder_last_hidden_state.numpy(), logits=out.logits.numpy(),
        loss=np.float32(out.loss.item()), **weights)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
