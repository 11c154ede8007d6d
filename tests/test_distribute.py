"""Training on several devices and machines, for real, on this CPU-only machine.

Each run is `captioning fit` in a fresh process: on one device; mirrored over two logical CPU
devices; two local worker processes under MultiWorkerMirroredStrategy (TF_CONFIG on 127.0.0.1);
JAX's DataParallel over two host devices; and extraction split over two devices. With the same
global batch (8 images) and seed, the validation losses of every epoch agree with the one-device
run to within 0.5 %: each replica averages the loss over its own words and Keras averages the
replicas, which differs from the mean over all words of the batch only when replicas hold
different numbers of words (dropout is off here; replicas draw their own dropout masks).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captioning.distribute import place
from captioning.errors import UsageError
from captioning.features import FeatureStore
from captioning.training.checkpoints import history_rows

_FIT = r"""
import os, sys
devices = int(os.environ.get("CAPTIONING_TEST_CPUS", "1"))
if devices > 1 and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
from captioning.cli import main
sys.exit(main(sys.argv[1:]))
"""
TOLERANCE = 5e-3
# tf.distribute itself: under another backend (KERAS_BACKEND=jax pytest) these have nothing to test
TENSORFLOW_ONLY = pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                                     reason="tf.distribute needs the TensorFlow backend")
BACKBONE = "efficientnet_b0"


def fit_process(data, features, out, distribute, batch, env=None, cpus=1):
    args = ["fit", "--captions", data, "--features", features, "--out", out, "--decoder", "init-inject",
            "--epochs", "2", "--batch-size", str(batch), "--units", "32", "--embed-dim", "16", "--min-count", "1",
            "--dropout", "0", "--distribute", distribute, "--self-critical-epochs", "0"]
    env = {**os.environ, "CAPTIONING_TEST_CPUS": str(cpus), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", _FIT, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    return out


def val_losses(run: Path) -> list:
    return [r["val_loss"] for r in history_rows(run / "history.csv")]


def assert_same_training(run: Path, reference: Path):
    got, want = val_losses(run), val_losses(reference)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert abs(g - w) <= TOLERANCE * w, (got, want)
    assert {p.name for p in run.iterdir()} == {p.name for p in reference.iterdir()}


@pytest.fixture(scope="module")
def one_device(learnable, tmp_path_factory):
    out = tmp_path_factory.mktemp("distribute") / "one"
    finished(fit_process(learnable["data"], learnable["features"], out, "none", 8))
    return out


@TENSORFLOW_ONLY
def test_mirrored_on_two_logical_cpus_matches_one_device(learnable, one_device, tmp_path):
    out = tmp_path / "mirrored"
    stdout = finished(fit_process(learnable["data"], learnable["features"], out, "mirrored", 4, cpus=2))
    assert "mirrored: 2 replicas in sync" in stdout
    assert_same_training(out, one_device)
    training = json.loads((out / "config.json").read_text())["training"]
    assert (training["placement"], training["replicas"], training["global_batch_size"]) == ("mirrored", 2, 8)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow  # 10–22 s each; the mirrored test stays in the default run
@TENSORFLOW_ONLY
def test_multi_worker_two_local_processes_matches_one_device(learnable, one_device, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "multi"
    procs = [fit_process(learnable["data"], learnable["features"], out, "multi-worker", 4,
                         env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                              "TMPDIR": str(scratch)})
             for i in range(2)]
    chief, other = (finished(p) for p in procs)
    assert "multi-worker: worker 0 (chief), 2 replicas in sync" in chief
    assert "the chief worker wrote the run folder" in other
    assert_same_training(out, one_device)
    assert not any(scratch.iterdir()), "the non-chief worker left its scratch folder behind"


@pytest.mark.slow  # 10–22 s each; the mirrored test stays in the default run
def test_jax_data_parallel_on_two_host_devices_matches_one_device(learnable, tmp_path):
    pytest.importorskip("jax")
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [fit_process(learnable["data"], learnable["features"], tmp_path / name, mode, batch, env=env)
             for name, mode, batch in (("one", "none", 8), ("parallel", "mirrored", 4))]
    outs = [finished(p) for p in procs]
    assert "data-parallel: 2 replicas in sync" in outs[1]
    assert_same_training(tmp_path / "parallel", tmp_path / "one")
    one, parallel = (history_rows(tmp_path / n / "history.csv") for n in ("one", "parallel"))
    for a, b in zip(one, parallel):  # one program over a sharded batch: the same sums, to rounding
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * a["loss"]


@TENSORFLOW_ONLY
def test_multi_worker_needs_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="TF_CONFIG"):
        place("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UsageError, match="TF_CONFIG is not a valid cluster description"):
        place("multi-worker")
    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    for task, says in [({"type": "worker", "index": 2}, "index must be between 0 and 1"),
                       ({"type": "evaluator", "index": 0}, "chief and worker tasks only"),
                       ({"type": "chief", "index": 0}, "lists 0 chief addresses"),
                       ({"type": "worker"}, "not a valid cluster description")]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": workers, "task": task}))
        with pytest.raises(UsageError, match=says):
            place("multi-worker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["nowhere"]}, "task": {"type": "worker",
                                                                                          "index": 0}}))
    with pytest.raises(UsageError, match="not a host:port address"):
        place("multi-worker")


@TENSORFLOW_ONLY
def test_a_worker_that_never_starts_is_named_after_a_bounded_wait(learnable, tmp_path):
    with socket.socket() as s:  # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        own = s.getsockname()[1]
    cluster = {"worker": [f"127.0.0.1:{own}", f"127.0.0.1:{free}"]}
    env = {**os.environ, "CAPTIONING_CLUSTER_TIMEOUT": "3",
           "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})}
    done = subprocess.run([sys.executable, "-m", "captioning", "fit", "--captions", str(learnable["data"]),
                           "--features", str(learnable["features"]), "--out", str(tmp_path / "run"), "--distribute",
                           "multi-worker"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"worker 1 (127.0.0.1:{free}) never answered" in done.stderr
    assert "--distribute none" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


@TENSORFLOW_ONLY
def test_extraction_ignores_a_tf_config_left_in_the_environment(sample_dir, tmp_path, monkeypatch, capsys):
    """A cluster description left in the environment (common on clusters), naming a worker that never
    starts: extraction runs in this one process (it shards instead), rather than waiting for it."""
    from captioning.cli import main
    cluster = {"worker": ["127.0.0.1:9", "127.0.0.1:10"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert main(["extract-features", str(sample_dir / "Images"), "--backbone", BACKBONE, "--weights", "none",
                 "--limit", "2", "--out", str(tmp_path / "f.h5")]) == 0
    assert len(FeatureStore.open(tmp_path / "f.h5")) == 2


def test_auto_and_none_stay_on_one_device_here(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert place("auto").strategy == place("none").strategy == "none"
    with pytest.raises(UsageError, match="--distribute"):
        place("everywhere")


def _extract(images, out, distribute, env=None, cpus=1, extra=("--limit", "12")):
    args = ["extract-features", images, "--backbone", BACKBONE, "--weights", "none", "--out", out,
            "--batch-size", "5", "--distribute", distribute, *extra]
    env = {**os.environ, "CAPTIONING_TEST_CPUS": str(cpus), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", _FIT, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow  # 10–22 s each; the mirrored test stays in the default run
@TENSORFLOW_ONLY
def test_extraction_split_over_two_devices_matches_one(sample_dir, tmp_path):
    """One process, two devices: each batch (5 images, padded to split evenly) is split between them
    (``predict`` under the strategy; under JAX the same call over DataParallel)."""
    env = {"KERAS_BACKEND": "tensorflow"}
    finished(_extract(sample_dir / "Images", tmp_path / "one.h5", "none", env))
    assert "2 replicas in sync" in finished(_extract(sample_dir / "Images", tmp_path / "two.h5", "mirrored", env,
                                                      cpus=2))
    one, two = FeatureStore.open(tmp_path / "one.h5"), FeatureStore.open(tmp_path / "two.h5")
    assert one.ids == two.ids and len(one.ids) == 12
    np.testing.assert_allclose(two.rows(range(12)), one.rows(range(12)), rtol=1e-4, atol=1e-5)


def test_cli_refuses_multi_worker_without_a_cluster(learnable, tmp_path, monkeypatch, capsys):
    from captioning.cli import main
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = main(["fit", "--captions", str(learnable["data"]), "--features", str(learnable["features"]),
                 "--out", str(tmp_path / "run"), "--distribute", "multi-worker"])
    err = capsys.readouterr().err
    assert code == 2 and "TF_CONFIG" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


_FITS = r"""
import json, os, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from captioning.cli import main
for args in json.loads(sys.argv[1]):
    code = main(args)
    if code:
        sys.exit(code)
"""


@pytest.mark.slow  # 25 s; the default run keeps the pooled decoders' mirrored test
@TENSORFLOW_ONLY
def test_attention_layers_work_mirrored(sample_dir, tmp_path):
    """The custom attention layers replicated over 2 logical CPUs train as on one device (both runs
    in one process with two logical devices; ``none`` keeps to the first)."""
    spatial = tmp_path / "spatial.h5"
    finished(_extract(sample_dir / "Images", spatial, "none", extra=("--spatial", "--dtype", "float16")))
    common = ["fit", "--captions", str(sample_dir), "--features", str(spatial), "--decoder", "attention",
              "--epochs", "2", "--units", "16", "--embed-dim", "8", "--attention-dim", "8", "--min-count", "1",
              "--dropout", "0", "--self-critical-epochs", "0"]
    runs = [[*common, "--out", str(tmp_path / "one"), "--batch-size", "8", "--distribute", "none"],
            [*common, "--out", str(tmp_path / "two"), "--batch-size", "4", "--distribute", "mirrored"]]
    done = subprocess.run([sys.executable, "-c", _FITS, json.dumps(runs)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mirrored: 2 replicas in sync" in done.stdout
    assert_same_training(tmp_path / "two", tmp_path / "one")
