"""``LinearWarmup``: the learning rate rises linearly from near 0 to its target over the first N batches.

A callback rather than a ``LearningRateSchedule``: Keras refuses to let ``ReduceLROnPlateau`` set the
rate of an optimizer built on a schedule, and the halving on a stalled validation loss stays. The
callback sets the rate before each warm-up batch and leaves the optimizer alone afterwards (under
JAX, touching the model syncs its state, so only the warm-up batches pay for that). Its step count
is the epoch's index times the batches per epoch, so a resumed run picks up the ramp where it was.
"""

from __future__ import annotations

from captioning.backend import import_keras

keras = import_keras()


def warmup_rate(target: float, step: int, steps: int) -> float:
    """The rate for (0-based) batch ``step`` of a ``steps``-batch warm-up towards ``target``."""
    return target * min(1.0, (step + 1) / steps) if steps else target


class LinearWarmup(keras.callbacks.Callback):
    def __init__(self, steps: int, target: float, steps_per_epoch: int):
        super().__init__()
        self.steps, self.target, self.steps_per_epoch = steps, target, steps_per_epoch
        self._epoch, self._set = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._ramp(0)  # so the history row's rate (read at the epoch's start) is the one the epoch began with

    def on_train_batch_begin(self, batch, logs=None):
        self._ramp(batch)

    def _ramp(self, batch: int) -> None:
        step = self._epoch * self.steps_per_epoch + batch
        if step > self.steps:  # past the ramp (step == steps sets the target itself)
            return
        optimizer = self.model.optimizer
        if self._set is not None:  # something else (ReduceLROnPlateau) changed the rate: ramp to its share
            now = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            if abs(now - self._set) > 1e-5 * self._set:  # beyond float32 rounding
                self.target *= now / self._set
        self._set = warmup_rate(self.target, step, self.steps)
        optimizer.learning_rate = self._set
