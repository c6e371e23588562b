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
# The CPU decoding kernel (medmt5/model/cpu_kernels.py) is built once into the repository's
# ignored build/ folder, not into the user's ~/.cache.
os.environ.setdefault("MEDMT5_KERNEL_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "test-kernels"))
