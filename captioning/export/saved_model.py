"""``export --format saved_model``: a TensorFlow SavedModel that captions JPEG/PNG bytes in one call.

The graph holds everything from bytes to words: decoding and resizing as Pillow does them
(``graph_images``), the store's preprocessing, the image encoder,
the decoder's "feed the image" and "one step" graphs and the search (``graph_search``). It loads
with ``tf.saved_model.load`` and serves with TensorFlow Serving, without this package. Signatures,
each taking ``images`` (a batch of encoded image files as strings) and giving ``caption`` (strings)
and ``log_prob``:

- ``serving_default`` (alias of ``serve``): beam search of the recommended width;
- ``beam``: beam search, width ``beam_size`` (an int32 scalar);
- ``greedy``: the likeliest word at each step.

Re-ranking (the recommended decoding's second half) stays in Python: the bundle has it.
"""

from __future__ import annotations

import json
from pathlib import Path

from captioning import atomic
from captioning.errors import CaptioningError, UsageError



def graph_steps(captioner):
    """The run's decoder as ``graph_search.Steps``: its one-step graphs, as im2txt exports them."""
    from captioning import decoders
    from captioning.decoders.recurrent import RecurrentSteps
    from captioning.export.graph_search import Steps
    steps = decoders.step_model(captioner.model, captioner.decoder)
    if not isinstance(steps, RecurrentSteps):
        raise CaptioningError(f"{captioner.run_dirs[0]}: a {captioner.decoder.type} decoder cannot be exported as a graph "
                              "yet (only merge, inject, init-inject and pre-inject decoders can); export it as a "
                              "bundle (--format bundle).")
    v = captioner.vocab
    return Steps(steps.encoder, steps.stepper, steps.units, steps.n_states, [v.pad_id, v.unk_id, v.start_id],
                 len(v), v.start_id, v.end_id, captioner.decoder.max_length)


def image_features(backbone, encoder, pooling: str):
    """A graph function: encoded image files (N,) → the features the store holds for them."""
    import tensorflow as tf
    from captioning.export import graph_images
    size = backbone.input_size

    def decode(data):
        return graph_images.resize(graph_images.decode(data), size)

    def features(images):
        x = tf.map_fn(decode, images, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        y = encoder(backbone.preprocess(x), training=False)
        rows = tf.shape(y)[0]
        return tf.reshape(y, [rows, -1, y.shape[-1]]) if pooling == "spatial" else tf.reshape(y, [rows, -1])
    return features


def export_saved_model(run_dir, out, weights=None, allow_partial: bool = False):
    from captioning import __version__
    from captioning.backend import import_keras
    from captioning.export.bundle import EXPORT_FILE, Export, check_out, publishing
    from captioning.inference.captioner import Captioner
    from captioning.inference.decoding import RECOMMENDED
    keras = import_keras()
    if keras.backend.backend() != "tensorflow":
        raise UsageError(f"--format saved_model writes a TensorFlow graph: run it with KERAS_BACKEND=tensorflow "
                         f"(this process uses {keras.backend.backend()}).")
    import tensorflow as tf
    from captioning.export import graph_search
    check_out(out)
    captioner = Captioner.load(run_dir, weights=weights, allow_partial=allow_partial)
    steps = graph_steps(captioner)
    bb, encoder = captioner.backbone
    features = image_features(bb, encoder, captioner.feature_spec.pooling)
    words = tf.constant(captioner.vocab.tokens)
    k_default, alpha = RECOMMENDED.beam, RECOMMENDED.length_penalty

    def result(tokens, lengths, log_prob):
        return {"caption": graph_search.to_text(tokens, lengths, words, steps), "log_prob": log_prob}

    def beam(images, beam_size):
        return result(*graph_search.beam(steps, features(images), beam_size, alpha))

    images = tf.TensorSpec([None], tf.string, name="images")
    signatures = {
        "serving_default": tf.function(lambda images: beam(images, tf.constant(k_default)), input_signature=[images]),
        "beam": tf.function(beam, input_signature=[images, tf.TensorSpec([], tf.int32, name="beam_size")]),
        "greedy": tf.function(lambda images: result(*graph_search.greedy(steps, features(images))),
                              input_signature=[images])}
    module = graph_module(tf, signatures)
    record = {"format": "saved_model", "from_run": str(Path(run_dir).resolve()), "captioning_version": __version__,
              "signatures": {"serving_default": f"beam search, width {k_default}", "beam": "beam search, width "
                             "beam_size", "greedy": "greedy"},
              "inputs": "images: encoded JPEG/PNG/GIF/BMP files (a batch of strings)",
              "outputs": "caption (strings), log_prob (float64)", "length_penalty": alpha,
              "image_size": bb.input_size, "features": captioner.feature_spec.describe(),
              "decoder": captioner.decoder.type, "max_length": captioner.decoder.max_length,
              "not_included": "re-ranking (the recommended decoding's second half): use the bundle for it"}
    with publishing(out) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={n: getattr(module, n) for n in signatures})
        atomic.write_text(tmp / EXPORT_FILE, json.dumps(record, indent=2))
        files = {p.name: _size(p) for p in tmp.iterdir()}
    return Export(Path(out), "saved_model", files, list(captioner.notes))


def graph_module(tf, functions: dict):
    """A ``tf.Module`` holding ``functions`` and exactly the variables they read. Not Keras' ExportArchive:
    it stores every weight twice (keras-team/keras#23553), once per wrapper of the same variable."""
    module = tf.Module()
    seen, weights = set(), []
    for name, fn in functions.items():
        setattr(module, name, fn)
        for v in fn.get_concrete_function().variables:
            if v.ref() not in seen:
                seen.add(v.ref())
                weights.append(v)
    module.weights = weights
    return module


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
