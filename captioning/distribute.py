"""Where ``fit`` trains (and ``extract-features`` embeds): one device, several devices of one machine,
or several machines.

Rides on the engines the backends already have: under TensorFlow a ``tf.distribute`` strategy
(``MirroredStrategy`` over this machine's GPUs — or its logical CPUs —, ``MultiWorkerMirrored``
across machines described by ``TF_CONFIG``); under JAX ``keras.distribution.DataParallel`` over
every local device. In every case ``--batch-size`` is per replica and one step consumes
``batch_size × replicas`` images; the learning rate is not scaled (Adam's steps do not grow
with the batch; pass ``--learning-rate`` to change it). Only the chief writes the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

from captioning import keras_private
from captioning.backend import import_keras
from captioning.errors import CaptioningError, UsageError

CHOICES = ("auto", "none", "mirrored", "multi-worker")


@dataclasses.dataclass
class Placement:
    strategy: str  # what runs: none, mirrored, multi-worker, data-parallel
    replicas: int = 1
    chief: bool = True
    worker: int = 0
    _tf_strategy: object = None

    def scope(self):
        """Variables (model, optimizer) must be created inside it."""
        return self._tf_strategy.scope() if self._tf_strategy is not None else contextlib.nullcontext()

    def describe(self) -> str:
        if self.strategy == "none":
            return "one device"
        where = f"worker {self.worker}{' (chief)' if self.chief else ''}, " if self.strategy == "multi-worker" else ""
        return f"{self.strategy}: {where}{self.replicas} replicas in sync"


def _task() -> tuple[str, int, dict]:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        raise UsageError("--distribute multi-worker needs the TF_CONFIG environment variable (the cluster's "
                         "addresses and this worker's index); see docs/scaling.md.")
    shape = ("{\"cluster\": {\"worker\": [\"host:port\", ...]}, \"task\": {\"type\": \"worker\", "
             "\"index\": 0}}")
    try:
        config = json.loads(raw)
        task = config["task"]
        kind, index, cluster = str(task["type"]), int(task["index"]), dict(config["cluster"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"TF_CONFIG is not a valid cluster description ({type(e).__name__}: {e}): it needs "
                         f"{shape}.") from None
    if kind not in ("chief", "worker"):
        raise UsageError(f"TF_CONFIG names this process a {kind!r}: captioning trains with chief and worker tasks "
                         "only (no evaluator or parameter servers); evaluate the run afterwards with "
                         "`captioning evaluate`.")
    hosts = cluster.get(kind)
    if not isinstance(hosts, list) or not 0 <= index < len(hosts):
        size = len(hosts) if isinstance(hosts, list) else 0
        raise UsageError(f"TF_CONFIG gives this process task {kind} {index}, but its cluster lists {size} "
                         f"{kind} address{'es' if size != 1 else ''}: the index must be between 0 and {size - 1}.")
    bad = [h for tasks in cluster.values() for h in (tasks if isinstance(tasks, list) else [tasks])
           if not isinstance(h, str) or ":" not in h]
    if bad:
        raise UsageError(f"TF_CONFIG's cluster holds {bad[0]!r}, which is not a host:port address: it needs {shape}.")
    return kind, index, cluster


def place(name: str = "auto", cluster: bool = True) -> Placement:
    """Choose (``auto``) or set up the placement ``name``; call before any model is built.
    ``cluster=False`` (extraction, which shards instead): ``auto`` never joins the machines that a
    ``TF_CONFIG`` left in the environment names."""
    if name not in CHOICES:
        raise UsageError(f"--distribute must be one of {', '.join(CHOICES)}; got {name!r}")
    if name == "none":
        return Placement("none")
    backend = import_keras().backend.backend()
    if backend == "tensorflow":
        return _tensorflow(name, cluster)
    if backend == "jax":
        return _jax(name)
    if name == "auto":
        return Placement("none")
    raise UsageError(f"--distribute {name} needs the TensorFlow or JAX backend (this is {backend}).")


def _tensorflow(name: str, cluster: bool = True) -> Placement:
    import tensorflow as tf
    if name == "multi-worker" or (name == "auto" and cluster and os.environ.get("TF_CONFIG")):
        kind, index, cluster = _task()
        _meet_the_cluster(kind, index, cluster)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
        return Placement("multi-worker", strategy.num_replicas_in_sync, chief, index, strategy)
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    if name == "auto" and len(gpus) < 2:
        return Placement("none")
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    return Placement("mirrored", strategy.num_replicas_in_sync, _tf_strategy=strategy)


WAIT_ENV = "CAPTIONING_CLUSTER_TIMEOUT"  # seconds to wait for the other workers (default 300)


def _meet_the_cluster(kind: str, index: int, cluster: dict) -> None:
    """Wait, at most ``CAPTIONING_CLUSTER_TIMEOUT`` seconds, until every other worker's address
    answers, before TensorFlow's strategy starts: inside it TensorFlow waits for a missing worker
    for an hour, holding the interpreter and ignoring SIGTERM. Meanwhile this worker answers on
    its own address, so the others see it too; TensorFlow's server takes the port over after."""
    import socket
    import sys
    import time
    limit = float(os.environ.get(WAIT_ENV, "300"))
    own = cluster[kind][index]
    others = {f"{k} {i} ({h})": h for k, hosts in cluster.items() for i, h in enumerate(hosts) if (k, i) != (kind, index)}
    listener = None
    try:
        host, _, port = own.rpartition(":")
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("", int(port)))
        listener.listen(16)
    except (OSError, ValueError):
        listener = None  # the port is taken (TensorFlow will say so) or unusable: only look for the others
    start, told, waiting = time.monotonic(), False, dict(others)
    try:
        while waiting:
            for name, address in list(waiting.items()):
                host, _, port = address.rpartition(":")
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                    del waiting[name]
                except (OSError, ValueError):
                    pass
            elapsed = time.monotonic() - start
            if waiting and elapsed > limit:
                raise CaptioningError(f"waited {limit:.0f} s for the cluster in TF_CONFIG, and {', '.join(waiting)} "
                                      "never answered. Start the same command there with its own TF_CONFIG (its task "
                                      "index), or train on this machine alone with --distribute none (and unset "
                                      f"TF_CONFIG). {WAIT_ENV} sets how long to wait.")
            if waiting and not told and elapsed > 10:
                print(f"waiting for {', '.join(waiting)} of TF_CONFIG's cluster (at most {limit:.0f} s)",
                      file=sys.stderr, flush=True)
                told = True
            if waiting:
                time.sleep(0.5)
        time.sleep(1.0)  # the others' last look at this worker's address
    finally:
        if listener is not None:
            listener.close()


def _jax(name: str) -> Placement:
    keras = import_keras()
    if name == "multi-worker":
        raise UsageError("--distribute multi-worker uses TF_CONFIG and needs the TensorFlow backend; under JAX "
                         "use --distribute mirrored (keras.distribution.DataParallel over this machine's devices).")
    devices = keras.distribution.list_devices()
    accelerators = [d for d in devices if not d.lower().startswith("cpu")]
    if name == "auto" and len(accelerators) < 2:
        return Placement("none")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return Placement("data-parallel", len(devices))


def release(placement: Placement) -> None:
    """Undo a JAX distribution, so that later models in this process are placed normally again."""
    if placement.strategy == "data-parallel":
        import_keras().distribution.set_distribution(None)


def prepare(model, placement: Placement, batch) -> None:
    """Work around two Keras 3 bugs under MultiWorkerMirroredStrategy (keras-team/keras#20585):
    ``fit`` first averages a distributed data batch eagerly to build the optimizer and metrics,
    and it averages each step's scalar logs over a batch axis they do not have; both raise.
    Here the optimizer and metrics are built from one local batch inside the strategy's scope
    (leaving that first step nothing to do), and the logs are averaged over the workers."""
    if placement.strategy != "multi-worker":
        return
    with placement.scope():
        keras_private.build_in_scope(model, batch)
    keras_private.replace_log_reduction(_workers_mean)


def _workers_mean(original):
    import tensorflow as tf

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)
    return reduce_per_replica


def feed(seq, placement: Placement):
    """What ``fit`` reads: the Sequence itself, or under multi-worker a ``tf.data`` view of it with
    DATA sharding: every worker reads the same global batches and keeps its replicas' slices of
    each, as one machine with that many devices would (Keras' own conversion of a PyDataset
    shards differently: its results drifted from the one-device run's)."""
    if placement.strategy != "multi-worker":
        return seq
    import tensorflow as tf

    def spec(a):
        return tf.TensorSpec((None,) * a.ndim, tf.as_dtype(a.dtype))

    signature = tf.nest.map_structure(spec, seq[0])
    dataset = tf.data.Dataset.from_generator(lambda: (seq[i] for i in range(len(seq))),
                                             output_signature=signature)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
