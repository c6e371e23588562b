"""Beam-search decoding throughput: medmt5.decoding.sampling.generate (cached, jitted) vs
Hugging Face `generate` on the same weights (written with medmt5.save_hf), same inputs, same run.

    python -m benchmarks.decode_throughput --size small --vocab_size 32128 --batch 8 \
        --inputs_length 256 --max_decode_length 64 --beam_size 4

Length penalty: T5X divides summed log-probs by ((5 + len) / 6) ** alpha, HF by
len ** length_penalty; the two coincide only at 0 (plain summed log-probs), the default here,
so the searches are the same algorithm and the sequences can be compared (agreement rate).
Tokens/s counts the returned best sequences' tokens up to and including EOS.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from benchmarks import common
from benchmarks.train_throughput import apply_xla_flags


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="small", choices=common.SIZES)
    p.add_argument("--vocab_size", type=int, default=32128, help="0 = the size's own")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs_length", type=int, default=256)
    p.add_argument("--max_decode_length", type=int, default=64)
    p.add_argument("--method", default="beam", choices=("beam", "greedy"),
                   help="beam search (--beam_size) or greedy on both sides")
    p.add_argument("--beam_size", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.0,
                   help="ours: T5X brevity penalty exponent; the peer gets length_penalty=alpha "
                        "(same semantics only at 0)")
    p.add_argument("--head_scale", type=float, default=4.0,
                   help="multiplies the random LM head so next-token distributions are peaked "
                        "like a trained model's (flat random ones make beams near-ties)")
    common.add_protocol_args(p, rounds=5, warmup=1)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="activations on both sides (the peer: torch.autocast)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = all CPUs)")
    p.add_argument("--xla_flags", default="", help="appended to XLA_FLAGS before JAX starts")
    p.add_argument("--peer", default="eager", choices=("eager", "none"))
    p.add_argument("--out", default=None)
    return p


def make_inputs(vocab: int, batch: int, length: int, seed: int = 0) -> np.ndarray:
    """Right-padded random tokens [B, S]: lengths from S/2 to S, EOS last."""
    rs = np.random.RandomState(seed)
    toks = rs.randint(2, vocab, (batch, length)).astype(np.int32)
    lengths = rs.randint(max(1, length // 2), length + 1, batch)
    for b, n in enumerate(lengths):
        toks[b, n - 1] = 1
        toks[b, n:] = 0
    return toks


def init_params(cfg, head_scale: float):
    """Random model params (host numpy), LM head multiplied by head_scale."""
    import jax
    from flax import linen as nn

    from medmt5.model.transformer import Transformer
    x = np.ones((1, 8), np.int32)
    params = nn.unbox(Transformer(cfg).init(jax.random.PRNGKey(0), x, x,
                                            enable_dropout=False)["params"])
    params = jax.tree.map(np.asarray, params)
    key = "token_embedder" if cfg.tie_word_embeddings else "decoder"
    if cfg.tie_word_embeddings:
        params[key]["embedding"] = params[key]["embedding"] * head_scale
    else:
        params[key]["logits_dense"]["kernel"] = params[key]["logits_dense"]["kernel"] * head_scale
    return params


def seq_lengths(seqs: np.ndarray, eos_id: int) -> np.ndarray:
    """[B, L] -> tokens up to and including the first EOS (L when none)."""
    is_eos = seqs == eos_id
    first = np.where(is_eos.any(-1), is_eos.argmax(-1) + 1, seqs.shape[-1])
    return first


def setup_ours(cfg, params, enc: np.ndarray, args) -> tuple:
    """medmt5.decoding.sampling.generate as a protocol Side; done() -> (extra fields, sequences)."""
    import jax
    import jax.numpy as jnp

    from medmt5.decoding import sampling as decoding
    from medmt5.model.transformer import Transformer
    common.log(f"ours: {args.method}")
    model = Transformer(cfg)
    dev_params = jax.device_put(params)
    batch = {"encoder_input_tokens": jnp.asarray(enc)}
    out = {}

    def call():
        out["r"] = decoding.generate(model, dev_params, batch, method=args.method,
                                     beam_size=args.beam_size, alpha=args.alpha,
                                     max_decode_length=args.max_decode_length)
        return out["r"]

    from medmt5.model import cpu_kernels
    rows = args.batch * (args.beam_size if args.method == "beam" else 1)
    kernel = decoding.uses_small_rows_kernel(rows, dev_params, cfg.activation_dtype)

    def done():
        # whether the decoding step's products ran in medmt5's CPU kernel, and if not, why
        note = None if kernel else (
            cpu_kernels.why_unavailable()
            or f"{rows} decoder rows, {cfg.activation_dtype} activations, the backend or the "
               "parameters' placement: XLA's own products")
        return ({"small_rows_kernel": kernel, "small_rows_kernel_note": note},
                np.asarray(out["r"][0]))

    return common.Side("ours", call, jax.block_until_ready, memory=common.jax_peak_memory,
                       reset_memory=common.reset_peak_rss), done


def setup_peer(cfg, params, enc: np.ndarray, args) -> tuple:
    """HF generate on the same weights as a protocol Side; done() -> (fields, sequences)."""
    import torch
    import transformers

    from medmt5 import save_hf
    torch.set_num_threads(args.threads)
    common.log(f"peer: HF generate, {args.threads} intra-op threads")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_hf(cfg, params, os.path.join(tmp, "hf"))
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    input_ids = torch.as_tensor(enc, device=device).long()
    mask = (input_ids > 0).long()
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else None
    out = {}
    beams = args.beam_size if args.method == "beam" else 1

    def call():
        with torch.inference_mode(), torch.autocast(device, dtype=dtype,
                                                    enabled=dtype is not None):
            out["r"] = model.generate(
                input_ids=input_ids, attention_mask=mask, num_beams=beams,
                max_new_tokens=args.max_decode_length, min_length=0,
                length_penalty=args.alpha, early_stopping="never", do_sample=False,
                num_return_sequences=1, no_repeat_ngram_size=0, repetition_penalty=1.0,
                use_cache=True)
        return out["r"]

    sync = (lambda r: torch.cuda.synchronize()) if device == "cuda" else (lambda r: r)
    def reset_memory():
        common.reset_peak_rss()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def memory():
        if device == "cuda":
            return dict(peak_memory_bytes=int(torch.cuda.max_memory_allocated()),
                        memory_source="torch.cuda.max_memory_allocated()")
        return dict(peak_memory_bytes=common.peak_rss_bytes(),
                    memory_source="process peak RSS (VmHWM) reset before this side's warm-up; "
                                  "includes the other side's resident state")

    def done():
        seqs = out["r"].cpu().numpy()[:, 1:]  # drop the decoder start token
        full = np.zeros((seqs.shape[0], args.max_decode_length), np.int32)
        full[:, :seqs.shape[1]] = seqs[:, :args.max_decode_length]
        rec = dict(device=device, torch=torch.__version__, transformers=transformers.__version__,
                   torch_intra_op_threads=torch.get_num_threads())
        return rec, full

    return common.Side("peer_eager", call, sync, memory=memory, reset_memory=reset_memory), done


def agreement(ours: np.ndarray, peer: np.ndarray, eos_id: int) -> dict:
    """Exact-match rate of the best sequences (tokens up to EOS) and token-level agreement."""
    lo, lp = seq_lengths(ours, eos_id), seq_lengths(peer, eos_id)
    same = [lo[b] == lp[b] and np.array_equal(ours[b, :lo[b]], peer[b, :lp[b]])
            for b in range(ours.shape[0])]
    n = min(ours.shape[1], peer.shape[1])
    return {"sequence_agreement_rate": float(np.mean(same)),
            "token_agreement_rate": float(np.mean(ours[:, :n] == peer[:, :n]))}


def run(args) -> dict:
    """Ours and HF generate interleaved under the measurement protocol; returns the record."""
    proto = common.check_protocol(args)
    apply_xla_flags(args.xla_flags)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU
    for name in ("batch", "inputs_length", "max_decode_length", "beam_size", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name}={getattr(args, name)} must be >= 1")
    if args.threads <= 0:
        args.threads = len(os.sched_getaffinity(0))
    cfg = common.model_config(args.size, args.vocab_size or None, dtype=args.dtype)
    params = init_params(cfg, args.head_scale)
    enc = make_inputs(cfg.vocab_size, args.batch, args.inputs_length)
    record = {
        "benchmark": "decode_throughput", "size": args.size,
        "shape": {"batch": args.batch, "inputs_length": args.inputs_length,
                  "max_decode_length": args.max_decode_length, "vocab_size": cfg.vocab_size},
        "search": {"method": args.method,
                   "beam_size": args.beam_size if args.method == "beam" else 1,
                   "alpha": args.alpha,
                   "peer": f"generate(num_beams="
                           f"{args.beam_size if args.method == 'beam' else 1}, "
                           f"length_penalty={args.alpha}, "
                           "early_stopping='never', max_new_tokens=max_decode_length)",
                   "head_scale": args.head_scale},
        "dtype": args.dtype, "num_params": common.param_count(cfg),
        "tokens_definition": "tokens of the returned best sequences up to and including EOS",
        "device": common.device_info(),
        "threads": {"jax": f"XLA CPU Eigen pool over {len(os.sched_getaffinity(0))} CPUs",
                    "torch_intra_op": args.threads},
        "environment": common.environment(),
    }
    proto["allocator"] = common.allocator_info()
    proto["matmul_rate"] = (common.matmul_rate() if record["device"]["platform"] == "cpu"
                            else None)
    sides = [setup_ours(cfg, params, enc, args)]
    if args.peer != "none":
        sides.append(setup_peer(cfg, params, enc, args))
    timings = common.interleave([s for s, _ in sides], args.rounds, args.warmup)
    proto["order"] = timings.pop("order")
    seqs = {}
    for side, done in sides:
        extra, seqs[side.name] = done()
        rec = dict(timings[side.name], **extra)
        rec["generated_tokens"] = int(seq_lengths(seqs[side.name], cfg.eos_id).sum())
        rec["tokens_per_s"] = rec["generated_tokens"] / rec["median_step_s"]
        record["ours" if side.name == "ours" else "peer"] = (
            rec if side.name == "ours" else {"eager": rec})
    record.setdefault("peer", {})
    record["ratios"] = {}
    if args.peer != "none":
        ours, peer = record["ours"], record["peer"]["eager"]
        record["ratios"] = {
            "tokens_per_s_ours_over_peer_eager": ours["tokens_per_s"] / peer["tokens_per_s"],
            "time_peer_over_ours": peer["median_step_s"] / ours["median_step_s"],
            "best_round_time_peer_over_ours": peer["min_step_s"] / ours["min_step_s"]}
        record["agreement"] = agreement(seqs["ours"], seqs["peer_eager"], cfg.eos_id)
    record["environment"]["load_average_after"] = common.load_average()
    record["protocol"] = common.finish_protocol(proto)
    return record


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.emit(run(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
