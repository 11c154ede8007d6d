"""Ctrl-C that is never lost.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when the signal arrives:
inside a finalizer (``__del__``, of which TensorFlow and h5py objects have many) it is printed as
"Exception ignored" and dropped, and a library's broad ``except`` can swallow it too — so under load
a Ctrl-C in the middle of training was sometimes ignored and the command ran to the end. The CLI
installs ``handler``, which also remembers the interrupt; the long loops (training batches,
self-critical batches, extraction batches) call ``check`` between steps, which raises it again.
"""

from __future__ import annotations

import signal

_pending = False


def _handler(signum, frame):
    global _pending
    _pending = True
    raise KeyboardInterrupt


def install():
    """Make Ctrl-C reliable while a command runs; returns the handler to give back to ``uninstall``
    (the CLI does both; a notebook keeps its own handler)."""
    global _pending
    _pending = False
    return signal.signal(signal.SIGINT, _handler)


def uninstall(previous) -> None:
    """The handler before ``install`` again, and no interrupt left pending (the command has ended)."""
    global _pending
    _pending = False
    signal.signal(signal.SIGINT, previous)


def check() -> None:
    """Raise ``KeyboardInterrupt`` once if a Ctrl-C arrived and was swallowed where it surfaced."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


def keras_callback():
    """A Keras callback that calls ``check`` after every training batch."""
    from captioning.backend import import_keras
    keras = import_keras()

    class Interruptible(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            check()
    return Interruptible()
