"""The Hugging Face peer of benchmarks/train_throughput.py: transformers
`MT5ForConditionalGeneration` of the same architecture and transformers' Adafactor, as one
measured side of the protocol (eager, or `torch.compile` on GPU).
"""
from __future__ import annotations

import contextlib
import sys

import torch
import transformers
from transformers.optimization import Adafactor

from benchmarks import common


def build_peer_model(cfg, device: str, seed: int = 0):
    """transformers MT5ForConditionalGeneration of the same architecture (untied head kept
    untied: transformers 5.x ties lm_head at construction, so it gets its own Parameter)."""
    torch.manual_seed(seed)
    model = transformers.MT5ForConditionalGeneration(
        transformers.MT5Config(**common.hf_config_kwargs(cfg)))
    if not cfg.tie_word_embeddings:
        model.lm_head.weight = torch.nn.Parameter(
            torch.randn(cfg.vocab_size, cfg.d_model) * cfg.d_model ** -0.5)
    return model.to(device)


def setup_peer(cfg, batch_np: dict, args, mode: str) -> tuple:
    """The HF train step (forward with labels, backward, Adafactor step) as a protocol Side."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if mode == "compile" and not cuda:
        print("warning: torch.compile on CPU needs a C++ toolchain and compiles for minutes; "
              "measured anyway because --peer asked for it", file=sys.stderr)
    torch.set_num_threads(args.threads)
    common.log(f"peer ({mode}) on {device}, {args.threads} intra-op threads")
    model = build_peer_model(cfg, device)
    model.train()
    opt = Adafactor(model.parameters(), lr=args.learning_rate, scale_parameter=True,
                    relative_step=False, warmup_init=False)
    forward = torch.compile(model) if mode == "compile" else model
    t = {k: torch.as_tensor(v, device=device) for k, v in batch_np.items()}
    inputs = dict(input_ids=t["encoder_input_tokens"].long(),
                  attention_mask=(t["encoder_input_tokens"] > 0).long(),
                  decoder_input_ids=t["decoder_input_tokens"].long(),
                  labels=t["decoder_target_tokens"].long())
    bf16 = cfg.dtype == "bfloat16"
    autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    losses = []

    def call():
        with autocast:
            loss = forward(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync(loss):
        if cuda:
            torch.cuda.synchronize()
        losses.append(float(loss.detach()))

    def reset_memory():
        common.reset_peak_rss()
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def memory() -> dict:
        if cuda:
            return dict(peak_memory_bytes=int(torch.cuda.max_memory_allocated()),
                        memory_source="torch.cuda.max_memory_allocated()")
        return dict(peak_memory_bytes=common.peak_rss_bytes(),
                    memory_source="process peak RSS (VmHWM) reset before this side's warm-up; "
                                  "includes the other sides' resident state")

    def done() -> dict:
        rec = dict(mode=mode, loss_first=losses[0], loss_last=losses[-1],
                   num_params=sum(p.numel() for p in model.parameters()),
                   precision="autocast bfloat16, float32 params" if bf16 else "float32",
                   torch=torch.__version__, torch_intra_op_threads=torch.get_num_threads(),
                   torch_inter_op_threads=torch.get_num_interop_threads(),
                   transformers=transformers.__version__)
        return rec

    return common.Side(f"peer_{mode}", call, sync, memory=memory, reset_memory=reset_memory), done
