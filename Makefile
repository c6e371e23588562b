# `make test` and `make demo` each create .venv and install the pinned dependencies.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install clean lint bench-train bench-decode

$(STAMP): requirements.txt requirements-test.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# ruff (pinned in requirements-test.txt; rules in ruff.toml).
lint: $(STAMP)
	$(PY) -m ruff check .

demo: $(STAMP)
	$(PY) -m medmt5.demo --out_dir=demo_out

# CPU benchmarks under the measurement protocol (refuse a loaded machine; docs/performance.md).
# benchmarks/run.sh preloads tcmalloc where installed and records the allocator either way.
bench-train: $(STAMP)
	PYTHON=$(PY) benchmarks/run.sh train_throughput --size small --vocab_size 32128 \
	    --batch 8 --inputs_length 256 --targets_length 64 --rounds 5 --out bench_cpu.jsonl

bench-decode: $(STAMP)
	PYTHON=$(PY) benchmarks/run.sh decode_throughput --size small --vocab_size 32128 \
	    --batch 4 --inputs_length 128 --max_decode_length 32 --method beam --beam_size 4 \
	    --rounds 5 --out bench_cpu.jsonl
	PYTHON=$(PY) benchmarks/run.sh decode_throughput --size small --vocab_size 32128 \
	    --batch 4 --inputs_length 128 --max_decode_length 32 --method greedy \
	    --rounds 5 --out bench_cpu.jsonl

clean:
	rm -rf $(VENV) demo_out
