"""An image encoder saved as ``.keras`` (captioning/features/keras_file.py): extract → fit → caption
a raw photo in a fresh process from another folder, and the files that are not encoders refused.

The tests save their own tiny random-init models (a few convolutions, Rescaling inside, as a
fine-tuned CNN or EfficientNet-Lite2's file has its preprocessing); nothing reads ../shared.
"""

import hashlib
import json
import shutil

import numpy as np
import pytest

from captioning.backend import import_keras
from captioning.cli import main
from captioning.features import FeatureStore
from hostile import cli, cli_process

keras = import_keras()
layers = keras.layers


def _encoder(path, size=32, vector=False, channels=3, lambda_layer=False, seed=5):
    keras.utils.set_random_seed(seed)
    image = keras.Input((size, size, channels))
    x = layers.Rescaling(1 / 127.5, offset=-1)(image)
    if lambda_layer:
        x = layers.Lambda(lambda t: t * 2.0)(x)
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    if vector:
        x = layers.GlobalAveragePooling2D()(x)
    keras.Model(image, x, name="tiny_encoder").save(path)
    return path


@pytest.fixture(scope="module")
def encoder_run(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("keras_file")
    encoder = _encoder(root / "encoder.keras")
    store = root / "f.h5"
    done = cli_process("extract-features", sample_dir / "Images", "--backbone", encoder, "--out", store,
                       "--captions", sample_dir)
    assert done.returncode == 0, done.stderr
    assert main(["fit", "--captions", str(sample_dir), "--features", str(store), "--out", str(root / "run"),
                 "--epochs", "2", "--batch-size", "8", "--units", "16", "--embed-dim", "8",
                 "--self-critical-epochs", "0", "--matcher-epochs", "0"]) == 0
    return {"root": root, "encoder": encoder, "store": store, "run": root / "run"}


def test_the_store_records_the_file_its_size_and_pooling(encoder_run):
    digest = hashlib.sha256(encoder_run["encoder"].read_bytes()).hexdigest()
    attrs = FeatureStore.open(encoder_run["store"]).attrs
    assert attrs["backbone"] == "keras_file" and attrs["weights"] == f"file:encoder.keras sha256:{digest[:16]}"
    assert attrs["weights_sha256"] == digest and attrs["weights_path"] == str(encoder_run["encoder"].resolve())
    assert int(attrs["input_size"]) == 32 and attrs["pooling"] == "avg" and list(attrs["feature_shape"]) == [16]
    assert "inside the model" in attrs["preprocessing"]
    config = json.loads((encoder_run["run"] / "config.json").read_text())
    assert config["features"]["backbone"] == "keras_file" and config["features"]["weights_sha256"] == digest


def test_a_fresh_process_elsewhere_captions_a_raw_photo_with_the_same_encoder(encoder_run, sample_dir, tmp_path,
                                                                              monkeypatch):
    store = FeatureStore.open(encoder_run["store"])
    image = store.ids[0]
    monkeypatch.chdir(tmp_path)  # the recorded absolute path is found from anywhere
    done = cli_process("caption", sample_dir / "Images" / image, "--run", encoder_run["run"], "--json")
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout)["caption"], str)
    from captioning.inference import Captioner
    again = Captioner.load(encoder_run["run"]).image_features([sample_dir / "Images" / image])
    np.testing.assert_allclose(again[0], store[image], rtol=1e-4, atol=1e-4)  # the network that made the store


def test_a_changed_or_moved_file_is_refused_then_found_with_weights(encoder_run, sample_dir, tmp_path, capsys):
    image = sample_dir / "Images" / FeatureStore.open(encoder_run["store"]).ids[0]
    run = tmp_path / "run"
    shutil.copytree(encoder_run["run"], run)
    other = _encoder(tmp_path / "other.keras", seed=6)  # same shapes, other weights
    code, _, err = cli(capsys, "caption", image, "--run", run, "--weights", other)
    assert code == 1 and "content differs" in err and "other.keras" in err
    config = json.loads((run / "config.json").read_text())
    config["features"]["weights_path"] = str(tmp_path / "gone.keras")
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli(capsys, "caption", image, "--run", run)
    assert code == 1 and "gone.keras" in err and "--weights PATH" in err
    moved = shutil.copy(encoder_run["encoder"], tmp_path / "moved.keras")
    code, out, err = cli(capsys, "caption", image, "--run", run, "--weights", moved, "--greedy")
    assert code == 0, err


def test_grids_and_the_models_own_vectors(sample_dir, tmp_path, capsys):
    grid = _encoder(tmp_path / "grid.keras")
    code, _, err = cli(capsys, "extract-features", sample_dir / "Images", "--backbone", grid, "--spatial",
                       "--limit", "3", "--out", tmp_path / "s.h5")
    assert code == 0, err
    attrs = FeatureStore.open(tmp_path / "s.h5").attrs
    assert list(attrs["grid"]) == [7, 7] and list(attrs["feature_shape"]) == [49, 16]
    vector = _encoder(tmp_path / "vector.keras", vector=True)
    code, _, err = cli(capsys, "extract-features", sample_dir / "Images", "--backbone", vector, "--limit", "3",
                       "--out", tmp_path / "v.h5")
    assert code == 0, err
    assert FeatureStore.open(tmp_path / "v.h5").attrs["pooling"] == "none"
    code, _, err = cli(capsys, "extract-features", sample_dir / "Images", "--backbone", vector, "--spatial",
                       "--limit", "3", "--out", tmp_path / "vs.h5")
    assert code == 2 and "not a grid" in err and not (tmp_path / "vs.h5").exists()


def test_a_model_of_any_size_needs_image_size(sample_dir, tmp_path, capsys):
    image = keras.Input((None, None, 3))
    keras.Model(image, layers.Conv2D(4, 3)(image)).save(tmp_path / "any.keras")
    args = ["extract-features", sample_dir / "Images", "--backbone", tmp_path / "any.keras", "--limit", "2",
            "--out", tmp_path / "a.h5"]
    code, _, err = cli(capsys, *args)
    assert code == 2 and "--image-size" in err
    code, _, err = cli(capsys, *args, "--image-size", "24")
    assert code == 0, err
    assert int(FeatureStore.open(tmp_path / "a.h5").attrs["input_size"]) == 24


@pytest.mark.parametrize("case, needle", [
    ("text model", "is not an image model"),
    ("one channel", "is not an image model"),
    ("lambda", "safe mode"),
    ("not a model", "cannot be loaded"),
    ("missing", "no such file"),
])
def test_files_that_are_no_encoder_are_refused_with_the_reason(case, needle, sample_dir, tmp_path, capsys):
    path = tmp_path / "m.keras"
    if case == "text model":
        tokens = keras.Input((5,))
        keras.Model(tokens, layers.Dense(3)(tokens)).save(path)
    elif case == "one channel":
        _encoder(path, channels=1)
    elif case == "lambda":
        _encoder(path, lambda_layer=True)
    elif case == "not a model":
        path.write_text("not a zip")
    code, _, err = cli(capsys, "extract-features", sample_dir / "Images", "--backbone", path, "--limit", "2",
                       "--out", tmp_path / "f.h5")
    assert code in (1, 2) and needle in err and "m.keras" in err and not (tmp_path / "f.h5").exists()


def test_options_that_do_not_apply_are_refused(sample_dir, tmp_path, capsys):
    encoder = _encoder(tmp_path / "e.keras")
    common = ["extract-features", sample_dir / "Images", "--limit", "2", "--out", tmp_path / "f.h5"]
    code, _, err = cli(capsys, *common, "--backbone", encoder, "--weights", "none")
    assert code == 2 and "brings its own weights" in err
    code, _, err = cli(capsys, *common, "--backbone", "efficientnet_b0", "--weights", "none", "--image-size", "64")
    assert code == 2 and "--image-size" in err
    assert not (tmp_path / "f.h5").exists()


def test_the_demo_and_the_notebooks_take_a_keras_file_as_their_backbone(tmp_path):
    from captioning.demo import sample_features
    encoder = _encoder(tmp_path / "e.keras")
    data, extraction, weights = sample_features(tmp_path / "work", images=12, backbone=str(encoder))
    assert extraction.store.attrs["backbone"] == "keras_file" and len(extraction.store) == 12
    assert extraction.store.path.name == "sample_e.h5" and "e.keras" in weights
