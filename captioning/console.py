"""What the CLI shows people: quiet TensorFlow, progress bars, summaries."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

# TensorFlow fixes its C++ log level when first imported, and ``import captioning`` imports it (the
# decoders register Keras layers) before the CLI has parsed --verbose: so the flag is looked for here.
_quiet = not any(a in ("-v", "--verbose") for a in sys.argv[1:])


def configure(verbose: bool) -> None:
    """Quiet by default: hide TensorFlow's C++ and Python log lines unless ``verbose``."""
    global _quiet
    _quiet = not verbose
    if _quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        warnings.filterwarnings("ignore")
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)


@contextlib.contextmanager
def _stderr_to_devnull():
    """TensorFlow's C++ runtime prints before any log level applies; silence fd 2 meanwhile."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # notebooks: no real fd 2
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def import_keras():
    """Import Keras (and its backend) once, quietly unless verbose."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    ctx = _stderr_to_devnull() if _quiet and "tensorflow" not in sys.modules else contextlib.nullcontext()
    if _quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # later C++ lines too (tf.data's, at fit)
    with ctx:
        try:
            import keras
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] != "tensorflow":
                raise
            raise ImportError("Keras runs on TensorFlow unless KERAS_BACKEND names another backend, and TensorFlow "
                              "is not installed: `pip install tensorflow`, or set KERAS_BACKEND=jax (or torch) "
                              "where that backend is installed.") from None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # noqa: F401  (first import is where the log wall comes from)
            tf.get_logger().setLevel("ERROR")
            tf.config.list_physical_devices()  # device set-up logs (cuInit on GPU-less machines) here, silenced
    return keras


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed``, which also seeds TensorFlow when it is installed — importing it,
    log wall and all, even under another backend: quietly here, like ``import_keras``."""
    keras = import_keras()
    ctx = _stderr_to_devnull() if _quiet and "tensorflow" not in sys.modules else contextlib.nullcontext()
    with ctx:
        keras.utils.set_random_seed(seed)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '3 images': summaries read as sentences."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def progress(iterable=None, total=None, desc="", unit="it", disable=None):
    """A tqdm bar with rate and ETA; off when not a terminal unless asked for."""
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                disable=disable, mininterval=0.5, smoothing=0.1)
