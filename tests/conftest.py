"""Shared pytest setup: 8 fake CPU devices, quiet TensorFlow, deterministic CPU JAX."""
import os

# 8 fake CPU devices for mesh tests; cheaper XLA CPU compiles (compiling, not running, is most
# of this suite's time). Subprocesses the tests start inherit the same flags.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8"
                      " --xla_backend_optimization_level=0"
                      " --xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
