"""Weights from a file: extract → fit → caption a raw photo later, without typing the path again.

The tests write their own small weights files (seeded random MobileNetV2), in both formats Keras
reads: the legacy ``.h5`` (loaded by layer order, as keras.applications' downloads are) and
``.weights.h5``. Nothing here touches the network or ../shared.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from captioning.cli import main
from captioning.backend import import_keras
from captioning.features import FeatureStore

keras = import_keras()


def _write_weights(path, legacy: bool, seed: int = 7, constructor="MobileNetV2"):
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, constructor)(include_top=False, weights=None, input_shape=(224, 224, 3))
    if legacy:
        import h5py
        from keras.src.legacy.saving import legacy_h5_format
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
    else:
        model.save_weights(path)
    return path


@pytest.fixture(scope="module")
def weights_run(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    weights = _write_weights(root / "mobilenet_v2_no_top.h5", legacy=True)
    store = root / "f.h5"
    assert main(["extract-features", str(sample_dir / "Images"), "--backbone", "mobilenet_v2", "--weights",
                 str(weights), "--out", str(store), "--captions", str(sample_dir)]) == 0
    assert main(["fit", "--captions", str(sample_dir), "--features", str(store), "--out", str(root / "run"),
                 "--epochs", "2", "--batch-size", "8", "--units", "16", "--embed-dim", "8"]) == 0
    return {"root": root, "weights": weights, "store": store, "run": root / "run"}


def _caption(run, image, *extra):
    return subprocess.run([sys.executable, "-m", "captioning", "caption", str(image), "--run", str(run),
                           "--beam", "3", "--json", *extra], capture_output=True, text=True)


def test_store_and_run_record_the_file_path_and_hash(weights_run):
    import hashlib
    digest = hashlib.sha256(weights_run["weights"].read_bytes()).hexdigest()
    attrs = FeatureStore.open(weights_run["store"]).attrs
    assert attrs["weights_sha256"] == digest and attrs["weights_path"] == str(weights_run["weights"].resolve())
    assert attrs["weights"] == f"file:mobilenet_v2_no_top.h5 sha256:{digest[:16]}"
    assert attrs["preprocessing"] == "keras.applications.mobilenet_v2.preprocess_input"
    config = json.loads((weights_run["run"] / "config.json").read_text())
    assert config["features"]["weights_sha256"] == digest and config["features"]["backbone"] == "mobilenet_v2"


def test_caption_a_raw_photo_in_a_new_process_uses_the_recorded_file(weights_run, sample_dir):
    store = FeatureStore.open(weights_run["store"])
    image = store.ids[0]
    done = _caption(weights_run["run"], sample_dir / "Images" / image)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    # Two epochs on 60 images teach no words (the caption may be empty, or "a a a ..."): what is tested
    # here is that a fresh process captions the photo with the recorded network, as checked below.
    assert "Traceback" not in done.stderr and isinstance(line["caption"], str) and np.isfinite(line["log_prob"])
    from captioning.inference import Captioner
    recomputed = Captioner.load(weights_run["run"]).image_features([sample_dir / "Images" / image])
    np.testing.assert_allclose(recomputed[0], store[image], rtol=1e-3, atol=1e-3)  # the same network


def test_moved_or_changed_weights_file_asks_for_the_path(weights_run, sample_dir, tmp_path):
    image = sample_dir / "Images" / FeatureStore.open(weights_run["store"]).ids[0]
    moved = tmp_path / "moved.h5"
    shutil.move(weights_run["weights"], moved)
    try:
        done = _caption(weights_run["run"], image)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert "which is gone" in done.stderr and "--weights PATH" in done.stderr
        assert _caption(weights_run["run"], image, "--weights", str(moved)).returncode == 0
        other = _write_weights(tmp_path / "other.h5", legacy=True, seed=8)
        done = _caption(weights_run["run"], image, "--weights", str(other))
        assert done.returncode == 1 and "content differs" in done.stderr and "Traceback" not in done.stderr
    finally:
        shutil.move(moved, weights_run["weights"])


def test_weights_h5_format_loads_and_a_file_for_another_network_is_refused(sample_dir, tmp_path, capsys):
    new_format = _write_weights(tmp_path / "m.weights.h5", legacy=False)
    assert main(["extract-features", str(sample_dir / "Images"), "--backbone", "mobilenet_v2", "--weights",
                 str(new_format), "--out", str(tmp_path / "a.h5"), "--limit", "4"]) == 0
    wrong = _write_weights(tmp_path / "small.h5", legacy=True, constructor="MobileNetV3Small")
    capsys.readouterr()
    assert main(["extract-features", str(sample_dir / "Images"), "--backbone", "mobilenet_v2", "--weights",
                 str(wrong), "--out", str(tmp_path / "b.h5"), "--limit", "4"]) == 1
    err = capsys.readouterr().err
    assert "small.h5" in err and "mobilenet_v2" in err and "Traceback" not in err


def test_weights_option_for_features_without_a_weights_file(tmp_path):
    """A random-init run has no file to take: --weights is refused, not ignored. An ImageNet run takes
    the file (users offline pass the ImageNet file they downloaded by hand)."""
    from captioning.errors import CaptioningError
    from captioning.features.backbones import weights_for_spec
    from captioning.features.spec import FeatureSpec
    random_init = FeatureSpec("mobilenet_v2", "none (random init, seed 3)", "avg", 224, (1280,))  # before 0.3.1
    assert weights_for_spec(random_init) == ("none", 3)
    with pytest.raises(CaptioningError, match="randomly initialised mobilenet_v2.*leave out --weights"):
        weights_for_spec(random_init, override=str(tmp_path / "w.h5"))
    backend = keras.backend.backend()
    here = FeatureSpec("mobilenet_v2", f"none (random init, seed 3, {backend} backend)", "avg", 224, (1280,))
    assert weights_for_spec(here) == ("none", 3)
    other = "jax" if backend != "jax" else "tensorflow"
    elsewhere = FeatureSpec("mobilenet_v2", f"none (random init, seed 3, {other} backend)", "avg", 224, (1280,))
    with pytest.raises(CaptioningError, match=f"{other} backend.*KERAS_BACKEND={other}"):
        weights_for_spec(elsewhere)
    imagenet = FeatureSpec("mobilenet_v2", "imagenet", "avg", 224, (1280,))
    assert weights_for_spec(imagenet) == ("imagenet", 0)
    assert weights_for_spec(imagenet, override=str(tmp_path / "w.h5")) == (str(tmp_path / "w.h5"), 0)


def test_a_foreign_store_without_the_files_hash_uses_the_given_file_with_a_note(tmp_path):
    """Stores written by other tools or early versions name a weights file without its sha256: the
    file is used as given (recorded path or --weights), and a note says its content was not checked."""
    from captioning.features.backbones import weights_for_spec
    from captioning.features.spec import FeatureSpec
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"any")
    foreign = FeatureSpec("mobilenet_v2", "file:w.h5", "avg", 224, (1280,))
    notes = []
    assert weights_for_spec(foreign, override=str(weights), notes=notes) == (str(weights), 0)
    assert len(notes) == 1 and "no sha256" in notes[0] and str(weights) in notes[0]


def test_random_init_identity_includes_the_backend_and_older_stores_still_match():
    from captioning.features.spec import FeatureSpec
    def spec(weights):
        return FeatureSpec("resnet50", weights, "avg", 224, (2048,))
    old, tf, jax = (spec("none (random init, seed 0)"), spec("none (random init, seed 0, tensorflow backend)"),
                    spec("none (random init, seed 0, jax backend)"))
    assert tf.differences(jax) and not old.differences(tf) and not old.differences(jax)
    assert spec("none (random init, seed 1)").differences(tf)
