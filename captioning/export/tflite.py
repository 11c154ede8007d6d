"""``export --format tflite``: the image encoder and the one-step decoder as LiteRT (TFLite) models,
for phones and small devices, with the search loop on the host (as im2txt and the TensorFlow
tutorials that serve captioners do).

- ``encoder.tflite`` (signature ``encode``): ``pixels`` (N, S, S, 3) float32 RGB 0–255, resized as
  the feature store recorded → ``state_0`` … ``state_{n-1}``: the decoder's initial state. The
  store's preprocessing, the image encoder and the decoder's "feed the image" graph are inside.
- ``step.tflite`` (signature ``step``): ``token`` (N,) int32 and ``state_0`` … → ``log_probs``
  (N, vocabulary) and the next ``state_0`` ….
- ``vocab.json`` (the words by id) and ``export.json`` (start, end and never-emitted ids, the
  longest caption, the image size and resize, the precision) — what a host loop needs.

Precisions: float32; float16 (weights stored in half precision, computed in float32: half the size);
int8 (dynamic-range quantization: weights in 8 bits, about a quarter of the size). docs/export.md
has the host loop and a table of size, speed and dev scores for each.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from captioning import atomic
from captioning.errors import UsageError

PRECISIONS = ("float32", "float16", "int8")


def _convert(tf, fn, name: str, precision: str) -> bytes:
    """A ``tf.function`` with an input signature → TFLite flatbuffer bytes with signature ``name``."""
    module = tf.Module()
    module.fn = fn
    module.weights = list(fn.get_concrete_function().variables)  # tracked once, as in saved_model.py
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={name: fn})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[name])
        if precision != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def export_tflite(run_dir, out, weights=None, allow_partial: bool = False, precision: str = "float16"):
    from captioning import __version__
    from captioning.backend import import_keras
    from captioning.export.bundle import EXPORT_FILE, Export, check_out, publishing
    from captioning.export.saved_model import graph_steps
    from captioning.features.images import RESIZE
    from captioning.inference.captioner import Captioner
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    keras = import_keras()
    if keras.backend.backend() != "tensorflow":
        raise UsageError("--format tflite converts TensorFlow graphs: run it with KERAS_BACKEND=tensorflow "
                         f"(this process uses {keras.backend.backend()}).")
    import tensorflow as tf
    check_out(out)
    captioner = Captioner.load(run_dir, weights=weights, allow_partial=allow_partial)
    steps = graph_steps(captioner)
    bb, encoder = captioner.backbone
    size, spatial = bb.input_size, captioner.feature_spec.pooling == "spatial"
    n_state = len(steps.feed_image.outputs)  # the context carried along, then the RNN states

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")])
    def encode(pixels):
        y = encoder(bb.preprocess(pixels), training=False)
        rows = tf.shape(y)[0]
        features = tf.reshape(y, [rows, -1, y.shape[-1]]) if spatial else tf.reshape(y, [rows, -1])
        return {f"state_{i}": s for i, s in enumerate(steps.start(features))}

    state_specs = [tf.TensorSpec([None, *s.shape[1:]], tf.float32, name=f"state_{i}")
                   for i, s in enumerate(steps.feed_image.outputs)]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="token"), *state_specs])
    def step(token, *state):
        out = steps.one_step([token, *state], training=False)
        return {"log_probs": out[0], **{f"state_{i}": s for i, s in enumerate(out[1:])}}

    v = captioner.vocab
    record = {"format": "tflite", "precision": precision, "from_run": str(Path(run_dir).resolve()),
              "captioning_version": __version__, "decoder": captioner.decoder.type,
              "encoder": {"file": "encoder.tflite", "signature": "encode", "input": "pixels",
                          "outputs": [f"state_{i}" for i in range(n_state)]},
              "step": {"file": "step.tflite", "signature": "step", "inputs": ["token"] +
                       [f"state_{i}" for i in range(n_state)], "outputs": ["log_probs"] +
                       [f"state_{i}" for i in range(n_state)]},
              "image_size": size, "resize": f"{RESIZE} (Pillow), RGB 0-255 float32",
              "features": captioner.feature_spec.describe(),
              "start_id": v.start_id, "end_id": v.end_id, "never_emit": [v.pad_id, v.unk_id, v.start_id],
              "max_length": captioner.decoder.max_length, "vocab": "vocab.json: tokens[id] is the word"}
    with publishing(out) as tmp:
        (tmp / "encoder.tflite").write_bytes(_convert(tf, encode, "encode", precision))
        (tmp / "step.tflite").write_bytes(_convert(tf, step, "step", precision))
        shutil.copyfile(captioner.run_dirs[0] / "vocab.json", tmp / "vocab.json")
        atomic.write_text(tmp / EXPORT_FILE, json.dumps(record, indent=2))
        files = {p.name: p.stat().st_size for p in tmp.iterdir()}
    return Export(Path(out), f"tflite ({precision})", files, list(captioner.notes))
