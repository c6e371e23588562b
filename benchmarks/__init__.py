"""Throughput benchmarks (train step, beam decoding) against Hugging Face transformers."""
