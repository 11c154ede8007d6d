"""Benchmark: decoding under JAX, rows padded to buckets versus exact rows (not a test).

    python bench/compiles.py [--run RUN_DIR] [--images 1000] [--features STORE.h5]

JAX compiles a program for every new input shape. Search shrinks its batch as captions end, so
with exact rows almost every step of a greedy or beam search is a new shape; padding the rows to
the next power of two (``captioning.decoders.steps.run_rows``, the default under JAX) bounds a
search to log2(rows) + 1 shapes. Each variant runs in a fresh process (an empty compile cache),
on the first ``--images`` images of the real Flickr8k feature store, with the real vocabulary:
greedy then beam 3, each twice (cold: compiles included; warm: the same call again), then
sampling as a self-critical epoch does (batches of 32 images × 5 samples, each its own seed). Without
``--run`` a decoder is trained for one epoch first (speed does not depend on how well).
On a GPU each compile costs about a second: there the difference is larger than on CPUs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "flickr8k"

_MEASURE = r"""
import json, sys, time
import jax, numpy as np
from captioning.decoders import steps
from captioning.features import FeatureStore
from captioning.inference import BeamSearch, Captioner, Greedy, RandomSampler
run, store, images, pad = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "padded"
steps.padded_rows_by_default = lambda: pad
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(secs) if event == "/jax/core/compile/backend_compile_duration" else None)
cap = Captioner.load(run)
feats = FeatureStore.open(store).rows(np.arange(images)).astype(np.float32)
out = {}
for name, strategy in (("greedy", Greedy()), ("beam 3", BeamSearch(3))):
    for when in ("cold", "warm"):
        before, t = len(compiles), time.perf_counter()
        cap.caption_features(feats, strategy)
        out[f"{name} {when}"] = (time.perf_counter() - t, len(compiles) - before, float(sum(compiles[before:])))
before, t = len(compiles), time.perf_counter()
for b in range(20):  # a self-critical epoch's pattern: 32 images x 5 samples per batch
    cap.caption_features(np.repeat(feats[32 * b:32 * (b + 1)], 5, axis=0), RandomSampler(seed=b))
out["sampling, 20 batches of 160"] = (time.perf_counter() - t, len(compiles) - before, float(sum(compiles[before:])))
print(json.dumps(out))
"""


def trained_run(store: Path, folder: Path) -> Path:
    from captioning.training import FitOptions, fit
    run = folder / "run"
    fit(SHARED, store, run, FitOptions(epochs=1, self_critical_epochs=0), verbose=0)
    return run


def measure(run, store, images, mode) -> dict:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(run), str(store), str(images), mode],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a trained run folder on the store's features (default: train one epoch)")
    p.add_argument("--features", default=str(SHARED / "features" / "flickr8k_mobilenet_v2_trainval.h5"))
    p.add_argument("--images", type=int, default=1000)
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        run = a.run or trained_run(Path(a.features), Path(tmp))
        results = {mode: measure(run, a.features, a.images, mode) for mode in ("exact", "padded")}
    import jax
    print(f"\n{a.images} images, JAX {jax.__version__} on {jax.devices()[0].platform}; "
          "seconds (programs compiled, seconds compiling)\n")
    print("| pass | exact rows | padded to powers of two | ratio |\n|---|---|---|---|")
    for key in results["exact"]:
        (te, ne, ce), (tp, np_, cp) = results["exact"][key], results["padded"][key]
        print(f"| {key} | {te:.1f} s ({ne}, {ce:.1f} s) | {tp:.1f} s ({np_}, {cp:.1f} s) | {te / tp:.2f}× |")


if __name__ == "__main__":
    main()
