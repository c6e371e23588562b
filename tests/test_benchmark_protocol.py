"""The measurement protocol of the benchmarks (benchmarks/common.py): load refusal, --force
marking, interleaved rounds, per-round CPU accounting, allocator and matmul-rate records."""
import argparse
import os
import time

import pytest

from benchmarks import common, decode_throughput, train_throughput


def _args(*argv):
    p = argparse.ArgumentParser()
    common.add_protocol_args(p)
    return p.parse_args(list(argv))


def test_refuses_a_loaded_machine_and_names_the_load(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.73, 0.2, 0.1))
    with pytest.raises(SystemExit, match=r"load average 0\.73 >= 0\.5.*--force"):
        common.check_protocol(_args())


def test_idle_machine_is_not_forced_and_force_marks_the_record(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.12, 0.3, 0.4))
    proto = common.check_protocol(_args())
    assert proto["forced"] is False and proto["forced_reasons"] == []
    assert proto["load_average_before"] == [0.12, 0.3, 0.4] and proto["rounds"] == 5
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    proto = common.check_protocol(_args("--force"))
    assert proto["forced"] is True and "3.50" in proto["forced_reasons"][0]
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    assert "load_average_after" in common.finish_protocol(proto)


def test_too_few_rounds_refused_unless_forced(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    with pytest.raises(SystemExit, match="--rounds=2 < 5"):
        common.check_protocol(_args("--rounds", "2"))
    assert common.check_protocol(_args("--steps", "2", "--force"))["forced"] is True
    with pytest.raises(SystemExit, match="--warmup"):
        common.check_protocol(_args("--warmup", "0", "--force"))


def test_benchmarks_refuse_before_building_anything(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    args = train_throughput.resolve(train_throughput.build_parser().parse_args(
        ["--size", "tiny"]))
    with pytest.raises(SystemExit, match="refused to measure"):
        train_throughput.run_config(args)
    with pytest.raises(SystemExit, match="refused to measure"):
        decode_throughput.run(decode_throughput.build_parser().parse_args(["--size", "tiny"]))


def test_interleaves_warmups_then_alternating_rounds():
    calls = []

    def fast():
        calls.append("a")
        return 1

    def slow():
        calls.append("b")
        t0 = time.process_time()
        while time.process_time() - t0 < 0.02:  # burns CPU in this process
            pass
        return 2

    synced = []
    out = common.interleave([common.Side("a", fast, synced.append), common.Side("b", slow)],
                            rounds=5, warmup=1)
    assert out["order"] == ["warmup:a", "warmup:b"] + ["a", "b"] * 5
    assert calls == ["a", "b"] + ["a", "b"] * 5 and synced == [1] * 6
    for name in ("a", "b"):
        rec = out[name]
        assert len(rec["rounds"]) == 5 and len(rec["step_times_s"]) == 5
        assert rec["min_step_s"] <= rec["median_step_s"] <= rec["max_step_s"]
        assert all(r["other_cpu_s"] is None or r["other_cpu_s"] >= 0 for r in rec["rounds"])
    # The CPU-burning side's own CPU time is counted as ours, not as other processes'.
    assert out["b"]["median_step_cpu_s"] >= 0.015
    assert out["b"]["median_step_cpu_s"] > out["a"]["median_step_cpu_s"]


def test_interleave_rejects_duplicate_names_and_no_warmup():
    with pytest.raises(ValueError, match="differ"):
        common.interleave([common.Side("x", int), common.Side("x", int)], 1)
    with pytest.raises(ValueError, match="warmup"):
        common.interleave([common.Side("x", int)], 1, warmup=0)


def test_other_processes_cpu_comes_from_proc_stat():
    busy = common.cpu_busy_seconds()
    if busy is None:
        pytest.skip("no /proc/stat on this system")
    t0 = time.process_time()
    while time.process_time() - t0 < 0.05:
        pass
    assert common.cpu_busy_seconds() - busy >= 0.03  # our own burn shows up machine-wide
    assert common.own_cpu_seconds() >= 0.05


def test_allocator_record_follows_ld_preload_and_maps():
    info = common.allocator_info()
    assert info["LD_PRELOAD"] == os.environ.get("LD_PRELOAD", "")
    preloaded = "tcmalloc" in os.environ.get("LD_PRELOAD", "")
    assert (info["allocator"] == "tcmalloc") == (preloaded or any(
        "tcmalloc" in m for m in info["mapped_libraries"]))


def test_matmul_rate_is_a_positive_measured_figure():
    rec = common.matmul_rate(n=128, reps=2)
    assert rec["numpy_gflops"] > 0 and rec["jax_gflops"] > 0
    assert rec["ceiling_gflops"] == max(rec["numpy_gflops"], rec["jax_gflops"])


def test_data_pipeline_stages_alternate_in_rounds():
    import itertools

    from benchmarks import data_pipeline
    stages = {"a": (itertools.count(), lambda x: 1),
              "b": (iter(itertools.repeat([0] * 3)), lambda ex: len(ex))}
    out, order = data_pipeline._rounds(stages, rounds=3, seconds=0.01)
    assert order == ["a", "b"] * 3
    for name in ("a", "b"):
        rec = out[name]
        assert len(rec["rates"]) == 3 and rec["min"] <= rec["median"] <= rec["max"]
        assert len(rec["other_cpu_s"]) == 3
    assert out["b"]["median"] > 0


def test_data_pipeline_refuses_a_loaded_machine(monkeypatch):
    from benchmarks import data_pipeline
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 4.0, 4.0))
    with pytest.raises(SystemExit, match="refused to measure"):
        data_pipeline.main(["--seconds", "1"])
