"""Keras and its backend, imported once, quietly, and only when something needs them.

``import captioning`` stays light (the CLI answers ``--help`` and ``--version`` without loading
TensorFlow): the package's custom Keras layers are registered the moment Keras is imported — at once
if it already is, else right after ``import keras`` finishes (``when_keras_loads``) — so
``import captioning, keras; keras.saving.load_model("run/model.keras", safe_mode=True)`` works in
either order.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings

# TensorFlow fixes its C++ log level when first imported, which may happen before the CLI has parsed
# --verbose: so the flag is looked for here.
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
            from captioning.errors import MissingBackend
            raise MissingBackend("Keras runs on TensorFlow unless KERAS_BACKEND names another backend, and TensorFlow "
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


def when_keras_loads(callback) -> None:
    """Call ``callback()`` once Keras is imported: now if it is, else as soon as ``import keras`` ends."""
    module = sys.modules.get("keras")
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        callback()
    else:
        sys.meta_path.insert(0, _AfterImport("keras", callback))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds ``name`` with the other finders and wraps its loader to call ``callback`` after it ran."""

    def __init__(self, name, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once, and so that the search below finds the real module
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenCall(spec.loader, self.callback)
        return spec


class _ThenCall(importlib.abc.Loader):
    def __init__(self, loader, callback):
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.callback()
