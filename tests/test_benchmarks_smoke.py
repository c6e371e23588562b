"""Smoke tests of the benchmark code paths: tiny config, 1 step per side; JSON keys, not timings."""
import os

# Cheaper XLA CPU compiles; applies only if no JAX backend has started in this process.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                           " --xla_llvm_disable_expensive_passes=true")

import json  # noqa: E402
import math  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

from benchmarks import common, decode_throughput, train_throughput  # noqa: E402
from medmt5.model.transformer import Transformer  # noqa: E402

TINY = ["--size", "tiny", "--vocab_size", "256", "--inputs_length", "12",
        "--steps", "1", "--warmup", "1", "--threads", "1", "--force"]
RATE_KEYS = ("median_step_s", "step_times_s", "first_call_s", "tokens_per_s", "peak_memory_bytes",
             "memory_source", "loss_first", "loss_last", "num_params")


def _train_args(*extra):
    argv = TINY + ["--batch", "2", "--num_devices", "1", "--targets_length", "6",
                   "--layers", "1", *extra]
    return train_throughput.resolve(train_throughput.build_parser().parse_args(argv))


def test_train_benchmark_record_has_both_sides_and_ratio(capsys):
    rec = train_throughput.run_config(_train_args("--peer", "eager"))
    json.dumps(rec)  # serialisable
    for side in (rec["ours"], rec["peer"]["eager"]):
        for key in RATE_KEYS + ("model_tflops_per_s", "mfu"):
            assert key in side, key
        assert math.isfinite(side["loss_first"]) and side["mfu"] is None  # CPU: no bf16 peak
    # Same architecture on both sides, and the closed-form count agrees with both.
    assert rec["ours"]["num_params"] == rec["peer"]["eager"]["num_params"] == rec["num_params"]
    assert rec["tokens_per_step"] == 2 * (12 + 6)
    assert set(rec["ratios"]) == {"tokens_per_s_ours_over_peer_eager",
                                  "best_round_ours_over_peer_eager"}
    proto = rec["protocol"]  # forced: one round, and the test machine is not idle
    assert proto["forced"] and proto["order"] == ["warmup:ours", "warmup:peer_eager", "ours",
                                                  "peer_eager"]
    assert proto["matmul_rate"]["ceiling_gflops"] > 0 and proto["allocator"]["allocator"]
    assert rec["ours"]["fraction_of_fp32_matmul_rate"] > 0
    assert rec["levers"]["donate"] is True and rec["levers"]["attention_impl"] == "xla"
    assert rec["peer"]["eager"]["torch_intra_op_threads"] == 1
    assert "load_average_1_5_15" in rec["environment"] and rec["flop_formula"]


def test_train_benchmark_levers_scan_remat_chunked_no_donation():
    rec = train_throughput.run_config(_train_args(
        "--peer", "none", "--scan_layers", "true", "--remat_policy", "minimal",
        "--vocab_chunk_size", "100", "--donate", "false"))
    assert rec["peer"] == {} and rec["ratios"] == {}
    assert rec["levers"]["scan_layers"] and rec["levers"]["vocab_chunk_size"] == 100
    assert rec["ours"]["num_params"] == rec["num_params"]
    assert math.isfinite(rec["ours"]["loss_last"])


def test_lever_sweep_configurations_and_child_arguments():
    names = [n for n, _ in train_throughput.lever_configs(gpu=False)]
    assert names[0] == "baseline" and "no_donation" in names and "vocab_chunk_8192" in names
    gpu_names = [n for n, _ in train_throughput.lever_configs(gpu=True)]
    assert "xla_attention" in gpu_names and "xla_flags_off" in gpu_names
    for gpu in (False, True):  # every configuration's flags parse
        for _, extra in train_throughput.lever_configs(gpu):
            train_throughput.build_parser().parse_args(TINY + extra)
    assert train_throughput.child_args(
        ["--levers", "--out", "x.jsonl", "--size", "tiny", "--out=y"]) == ["--size", "tiny"]


def test_bad_flags_are_refused_with_the_flag_name():
    with pytest.raises(SystemExit, match="--batch=0"):
        train_throughput.resolve(train_throughput.build_parser().parse_args(["--batch", "0"]))
    with pytest.raises(SystemExit, match="unknown mode"):
        train_throughput.resolve(train_throughput.build_parser().parse_args(["--peer", "jit"]))


def test_matmul_flops_match_xla_cost_analysis_of_the_forward():
    cfg = common.model_config("tiny", 512).replace(d_model=64, d_ff=96, num_heads=2, d_kv=16)
    model = Transformer(cfg)
    b = common.synthetic_batch(cfg.vocab_size, 2, 24, 8)
    enc, dec = b["encoder_input_tokens"], b["decoder_input_tokens"]
    params = model.init(jax.random.PRNGKey(0), enc[:1], dec[:1], enable_dropout=False)
    cost = jax.jit(lambda p: model.apply(p, enc, dec, enable_dropout=False)).lower(
        params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    ours = common.matmul_flops(cfg, 2, 24, 8)
    # XLA also counts elementwise work (norms, softmax, gelu): a few percent on top of matmuls.
    assert 1.0 <= cost["flops"] / ours["forward"] < 1.15
    assert ours["train_step"] == 3 * ours["forward"]
    assert common.param_count(cfg) == sum(x.size for x in jax.tree.leaves(params))


def test_peak_table_and_mfu():
    assert common.mfu(98.9, 989.0) == pytest.approx(0.1)
    assert common.mfu(1.0, None) is None
    assert dict(common.PEAK_BF16_TFLOPS)["tpu v5p"] == 459.0
    with pytest.raises(ValueError, match="--size"):
        common.read_gin_size("huge")


def test_decode_benchmark_agrees_with_hf_beam_search():
    args = decode_throughput.build_parser().parse_args(
        TINY[:4] + ["--batch", "2", "--inputs_length", "10", "--max_decode_length", "5",
                    "--steps", "1", "--warmup", "1", "--threads", "1", "--force"])
    rec = decode_throughput.run(args)
    json.dumps(rec)
    for side in (rec["ours"], rec["peer"]["eager"]):
        for key in ("median_step_s", "tokens_per_s", "generated_tokens", "peak_memory_bytes"):
            assert key in side, key
    assert set(rec["ratios"]) == {"tokens_per_s_ours_over_peer_eager", "time_peer_over_ours",
                                  "best_round_time_peer_over_ours"}
    assert rec["protocol"]["order"][-2:] == ["ours", "peer_eager"]
    # Same weights, same inputs, same algorithm (no length penalty): same best sequences.
    assert rec["agreement"]["sequence_agreement_rate"] == 1.0


def test_greedy_decode_benchmark_agrees_with_hf_greedy():
    args = decode_throughput.build_parser().parse_args(
        TINY[:4] + ["--batch", "2", "--inputs_length", "10", "--max_decode_length", "5",
                    "--method", "greedy", "--steps", "1", "--threads", "1", "--force"])
    rec = decode_throughput.run(args)
    assert rec["search"]["method"] == "greedy" and rec["search"]["beam_size"] == 1
    assert rec["agreement"]["sequence_agreement_rate"] == 1.0
