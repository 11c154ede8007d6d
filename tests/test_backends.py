"""Backends other than the default: under JAX (CI runs TensorFlow) every decoder trains, dropout on,
and decodes; without TensorFlow installed the import error says what to do.

Runs in a fresh process with KERAS_BACKEND=jax. The attention decoder once drew its dropout mask
inside the scan over words, which JAX refuses (a tracer leaked from Keras' seed state): it
trained under TensorFlow only. Decoding pads rows to powers of two under JAX (one compiled
program per shape); the captions must not depend on it.
"""

import json
import os
import subprocess
import sys

import pytest

from captioning.errors import MissingBackend

_SCRIPT = r"""
import json
import numpy as np
from captioning import decoders
from captioning.decoders import DecoderConfig, caption_loss, steps as step_models
from captioning.inference import BeamSearch, Greedy
rng = np.random.default_rng(0)
out = {}
for kind in decoders.names():
    grid = 4 if decoders.get(kind).needs_spatial else 0
    cfg = DecoderConfig(kind, vocab_size=12, feature_dim=5, max_length=7, embed_dim=8 if kind == "transformer" else 6,
                        units=8, grid_size=grid, attention_dim=5, dropout=0.5, heads=2)
    model = decoders.build(cfg, sequences=True)
    model.compile(optimizer="adam", loss=caption_loss())
    feats = rng.normal(size=(6, grid, 5) if grid else (6, 5)).astype("float32")
    caption = rng.integers(4, 12, size=(6, 6)).astype("int32")
    caption[:, 0] = 2
    offset = decoders.get(kind).output_offset
    targets = np.zeros((6, 5 + offset), "int32")
    targets[:, offset:] = caption[:, 1:]
    trainable = lambda: [np.array(w) for w in model.trainable_weights]
    before = trainable()
    losses = [float(model.train_on_batch([feats, caption[:, :-1]], targets, sample_weight=(targets > 0) * 1.0))
              for _ in range(3)]
    moved = all(not np.array_equal(a, b) for a, b in zip(before, trainable()))
    next_word = decoders.build(cfg)
    next_word.set_weights(model.get_weights())
    steps = decoders.step_model(next_word, cfg)
    captions = {}
    for pad in (False, True):
        step_models.padded_rows_by_default = lambda: pad
        captions[pad] = [Greedy()(steps, feats, 2, 3, 7).tokens, BeamSearch(2)(steps, feats, 2, 3, 7).tokens]
    out[kind] = {"losses": losses, "moved": moved, "same": captions[False] == captions[True]}
print(json.dumps(out))
"""


def test_every_decoder_trains_with_dropout_and_decodes_under_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(results) == sorted(["merge", "inject", "init-inject", "pre-inject", "attention", "transformer"])
    for kind, r in results.items():
        assert all(0 < loss < 10 for loss in r["losses"]), kind  # finite, near log(12) for random words
        assert r["moved"], f"{kind}: a weight did not train"
        assert r["same"], f"{kind}: captions changed when rows were padded"


_NO_TENSORFLOW = r"""
import importlib.abc, sys
class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTensorFlow())
import captioning  # loads no Keras: fine without TensorFlow
if sys.argv[1] == "library":
    from captioning.inference import Captioner
    Captioner.load(sys.argv[2])
else:
    from captioning.cli import main
    sys.exit(main(["caption", "x.jpg", "--run", sys.argv[2]]))
"""


@pytest.mark.parametrize("how", ["library", "cli"])
def test_without_tensorflow_the_import_error_says_what_to_install_or_set(learnable, how):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # Keras' default: TensorFlow
    proc = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW, how, str(learnable["run"])], capture_output=True,
                          text=True, env=env, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert "Keras runs on TensorFlow" in last and "KERAS_BACKEND=jax" in last, last
    if how == "cli":
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    else:  # an ImportError, as Python users expect, that the CLI explains in one paragraph
        assert proc.returncode != 0 and last.startswith("captioning.errors.MissingBackend: ")
        assert issubclass(MissingBackend, ImportError)
