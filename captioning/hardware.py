"""What this machine computes on: decides reduced precision (features, re-ranking's second search) and
the LSTM kernel (training)."""

from __future__ import annotations

import functools
from pathlib import Path

from captioning.backend import import_keras


@functools.cache  # fixed for the life of the process; asked on every model trace
def cpu_flags() -> set:
    cpuinfo = Path("/proc/cpuinfo")  # Linux; elsewhere no flags are known
    if not cpuinfo.exists():
        return set()
    return {f for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for f in line.split()}


@functools.cache
def gpu_visible() -> bool:
    backend = import_keras().backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax
        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch
        return torch.cuda.is_available()
    return False


def reduced_precision() -> str | None:
    """The Keras dtype policy that computes faster than float32 here, or None where none does.

    GPUs compute in float16. CPUs with bfloat16 instructions (AVX512-BF16, AMX) run bfloat16 matrix
    products about twice as fast as float32 under TensorFlow (oneDNN); JAX's CPU compiler gains
    nothing from them, and CPUs without them would emulate bfloat16, slower than float32."""
    if gpu_visible():
        return "mixed_float16"
    if cpu_flags() & {"avx512_bf16", "amx_bf16"} and import_keras().backend.backend() == "tensorflow":
        return "mixed_bfloat16"
    return None
