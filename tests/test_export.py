"""``captioning export``: a run folder made self-contained, checked the way a user moves one — to
another working directory, with the backbone's weights file gone — in fresh processes.

The run is a tiny one on the sample set, from a MobileNetV2 weights file this test writes (random
weights, seeded), with every re-ranking file, so the default decoding uses all of them.
"""

import json
import subprocess
import sys

import pytest

from captioning.backend import import_keras
from captioning.cli import main

keras = import_keras()


@pytest.fixture(scope="module")
def exported(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(3)
    weights = root / "mobilenet_v2_no_top.weights.h5"
    keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3)).save_weights(weights)
    store = root / "f.h5"
    assert main(["extract-features", str(sample_dir / "Images"), "--backbone", "mobilenet_v2", "--weights",
                 str(weights), "--out", str(store), "--captions", str(sample_dir)]) == 0
    assert main(["fit", "--captions", str(sample_dir), "--features", str(store), "--out", str(root / "run"),
                 "--epochs", "3", "--batch-size", "8", "--units", "16", "--embed-dim", "8",
                 "--self-critical-epochs", "1", "--matcher-epochs", "2"]) == 0
    images = sorted((sample_dir / "Images").iterdir())[:4]
    before = {mode: _caption(root / "run", images, *extra) for mode, extra in MODES.items()}
    assert main(["export", str(root / "run"), "--out", str(root / "bundle")]) == 0
    moved = weights.rename(root / "elsewhere.weights.h5")  # the recorded path is gone, as on another machine
    yield {"root": root, "run": root / "run", "bundle": root / "bundle", "images": images, "before": before,
           "store": store, "weights": moved}


MODES = {"recommended": [], "greedy": ["--greedy"]}


def _caption(run, images, *extra, cwd=None):
    done = subprocess.run([sys.executable, "-m", "captioning", "caption", *map(str, images), "--run", str(run),
                           "--json", *extra], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_bundle_captions_as_the_run_did_elsewhere_without_the_weights_file(exported, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for mode, extra in MODES.items():
        after = _caption(exported["bundle"], exported["images"], *extra, cwd=elsewhere)
        assert [(c["caption"], round(c["log_prob"], 4)) for c in after] == \
            [(c["caption"], round(c["log_prob"], 4)) for c in exported["before"][mode]], mode
    # the run itself now needs the file it recorded: the bundle is what travels
    done = subprocess.run([sys.executable, "-m", "captioning", "caption", str(exported["images"][0]), "--run",
                           str(exported["run"])], capture_output=True, text=True)
    assert done.returncode == 1 and "--weights PATH" in done.stderr


def test_the_bundle_holds_the_encoder_and_the_reranking_files_not_the_checkpoints(exported):
    bundle = exported["bundle"]
    names = {p.name for p in bundle.iterdir()}
    assert {"model.keras", "vocab.json", "config.json", "encoder.keras", "neighbours.h5", "matcher.keras",
            "cross_entropy.keras"} <= names
    assert "checkpoints" not in names and not any(n.startswith(".") for n in names)
    config = json.loads((bundle / "config.json").read_text())
    assert config["export"]["encoder"] == "encoder.keras" and "encoder.keras" in config["files"]
    assert config["export"]["from_run"] == str(exported["run"].resolve())
    encoder = keras.saving.load_model(bundle / "encoder.keras", safe_mode=True)  # stock layers only
    assert tuple(encoder.outputs[0].shape) == (None, 1280)


def test_evaluate_takes_the_bundle_with_the_original_store(exported, sample_dir, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--run", str(exported["bundle"]), "--captions", str(sample_dir), "--features",
                 str(exported["store"]), "--split", "dev", "--greedy", "--out", str(out)]) == 0
    assert len(json.loads((out / "eval.json").read_text())["captions"]) > 0


def test_a_changed_encoder_or_a_weights_option_is_refused(exported, tmp_path, capsys):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(exported["bundle"], copy)
    image = str(exported["images"][0])
    assert main(["caption", image, "--run", str(copy), "--weights", str(exported["weights"])]) == 1
    assert "leave out --weights" in capsys.readouterr().err
    shutil.copyfile(exported["run"] / "model.keras", copy / "encoder.keras")
    assert main(["caption", image, "--run", str(copy)]) == 1
    assert "is not the file" in capsys.readouterr().err


def test_bad_input_is_refused_and_nothing_is_half_written(exported, tmp_path, capsys, monkeypatch):
    import shutil
    run, weights = exported["run"], str(exported["weights"])
    broken = tmp_path / "broken"
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("checkpoints"))
    (broken / "model.keras").unlink()
    assert main(["export", str(broken), "--out", str(tmp_path / "b1"), "--weights", weights]) == 1
    assert "no model.keras" in capsys.readouterr().err and not (tmp_path / "b1").exists()

    with pytest.raises(SystemExit) as e:
        main(["export", str(run), "--out", str(tmp_path / "b2"), "--format", "onnx"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", str(run), "--out", str(taken), "--weights", weights]) == 1
    assert "not an earlier export" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    # a failure while writing leaves neither the folder nor a temporary one
    from captioning.export import bundle
    def fail(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(bundle, "_check_encoder", fail)
    assert main(["export", str(run), "--out", str(tmp_path / "b3"), "--weights", weights]) == 1
    assert "No space left" in capsys.readouterr().err
    assert not list(tmp_path.glob("*b3*"))
    monkeypatch.undo()

    # an earlier export is replaced whole
    again = tmp_path / "again"
    shutil.copytree(exported["bundle"], again)
    (again / "stale.txt").write_text("from before")
    assert main(["export", str(run), "--out", str(again), "--weights", weights]) == 0
    assert not (again / "stale.txt").exists() and (again / "encoder.keras").is_file()
    assert not list(tmp_path.glob(".again*"))


LOAD_SAVED_MODEL = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = tf.constant([open(p, "rb").read() for p in sys.argv[3:]])
name = sys.argv[2]
args = {"images": images} if name != "beam" else {"images": images, "beam_size": tf.constant(3)}
out = model.signatures[name](**args)
print(json.dumps([[c.decode(), float(p)] for c, p in zip(out["caption"].numpy(), out["log_prob"].numpy())]))
assert "captioning" not in sys.modules
"""


@pytest.fixture(scope="module")
def saved_model(exported):
    out = exported["root"] / "saved_model"
    assert main(["export", str(exported["bundle"]), "--out", str(out), "--format", "saved_model"]) == 0
    return out


def test_the_saved_model_captions_image_bytes_as_captioning_caption_does(exported, saved_model, tmp_path):
    images = exported["images"]
    for signature, extra in (("greedy", ["--greedy"]), ("beam", ["--beam", "3", "--no-rerank"]),
                             ("serving_default", ["--beam", "16", "--no-rerank"])):
        done = subprocess.run([sys.executable, "-c", LOAD_SAVED_MODEL, str(saved_model), signature, *map(str, images)],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        graph = json.loads(done.stdout)
        python = _caption(exported["bundle"], images, *extra)
        assert [c for c, _ in graph] == [c["caption"] for c in python], signature
        assert all(abs(p - c["log_prob"]) < 1e-4 for (_, p), c in zip(graph, python)), signature
    record = json.loads((saved_model / "export.json").read_text())
    assert record["format"] == "saved_model" and "serving_default" in record["signatures"]
