"""Benchmark: `captioning fit --distribute` on several devices against one device (not a test).

    python bench/scaling.py [--devices 2] [--epochs 1] [--backend tensorflow|jax] [--out work/scaling]

Trains the default decoder on the real Flickr8k features in ``../shared`` (6,000 train images) for
``--epochs`` epochs, once on one device and once mirrored over ``--devices`` devices with the same
global batch (16 images), each in a fresh process, and prints train images/s, the efficiency per
device (multi-device rate ÷ (devices × one-device rate)), both validation losses and each process's
peak memory. On a GPU
machine the devices are its GPUs. On a CPU-only machine they are logical CPU devices that share
the same cores, so the speed columns say nothing about scaling there; the validation losses show
that the mirrored run learns what the one-device run learns.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "flickr8k"
_RUN = r"""
import os, sys
n = int(os.environ["SCALING_DEVICES"])
if n > 1 and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
from captioning.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(devices, mode, batch, a):
    out = Path(a.out) / f"{mode}-{devices}"
    env = {**os.environ, "SCALING_DEVICES": str(devices), "KERAS_BACKEND": a.backend}
    if a.backend == "jax" and devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    args = ["fit", "--captions", a.captions, "--features", a.features, "--out", out, "--epochs", a.epochs,
            "--batch-size", batch, "--distribute", mode, "--self-critical-epochs", "0"]
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{mode}-{devices}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", _RUN, *map(str, args)], env=env, stdout=f, stderr=f)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory
    seconds = time.perf_counter() - start
    if status:
        sys.exit(f"{mode} on {devices} devices failed:\n{log.read_text()[-3000:]}")
    config = json.loads((out / "config.json").read_text())
    images = config["data"]["train_images"] * a.epochs
    val = [float(line.split(",")[5]) for line in (out / "history.csv").read_text().splitlines()[1:]]
    return seconds, images / seconds, val[-1], usage.ru_maxrss / 1024 ** 2  # Linux: KiB → GiB


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax"])
    p.add_argument("--captions", default=str(SHARED))
    p.add_argument("--features", default=str(SHARED / "features" / "flickr8k_mobilenet_v2_trainval.h5"))
    p.add_argument("--out", default="work/scaling")
    a = p.parse_args()
    if any(Path(a.out).glob("*/config.json")):
        sys.exit(f"{a.out} holds earlier runs; remove it or pass --out")
    global_batch = 16
    one = run(1, "none", global_batch, a)
    many = run(a.devices, "mirrored", global_batch // a.devices, a)
    print(f"\nfit, {a.backend}, {a.epochs} epoch(s) of Flickr8k train, global batch {global_batch} images "
          "(wall time includes start-up)\n")
    print("| devices | wall s | train images/s | efficiency per device | val_loss | peak RSS |")
    print("|---|---|---|---|---|---|")
    print(f"| 1 | {one[0]:.0f} | {one[1]:.1f} | 1.00 | {one[2]:.4f} | {one[3]:.2f} GiB |")
    print(f"| {a.devices} (mirrored) | {many[0]:.0f} | {many[1]:.1f} | {many[1] / (a.devices * one[1]):.2f} | "
          f"{many[2]:.4f} | {many[3]:.2f} GiB |")
    print(f"\nval_loss difference: {abs(many[2] - one[2]) / one[2]:.2%} of the one-device run's")


if __name__ == "__main__":
    main()
