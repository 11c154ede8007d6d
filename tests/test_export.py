"""``captioning export``: a run folder made self-contained, checked the way a user moves one — to
another working directory, with the backbone's weights file gone — in fresh processes.

The run is a tiny one on the sample set, from a MobileNetV2 weights file this test writes (random
weights, seeded), with every re-ranking file, so the default decoding uses all of them.
"""

import json
import subprocess
import sys
from pathlib import Path

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


EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def _example(name, *args, cwd):
    """Run one of docs/examples in a fresh process that never imports captioning."""
    script = f"import runpy, sys; sys.argv = {[name, *map(str, args)]!r}; " \
             f"runpy.run_path({str(EXAMPLES / name)!r}, run_name='__main__'); assert 'captioning' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def _library(bundle, images, recipe):
    """What ``captioning caption`` prints, computed here (the bundle test runs the command itself)."""
    from captioning.inference import Captioner
    return [{"caption": c.text, "log_prob": c.log_prob} for c in Captioner.load(bundle).caption(images, recipe)]


def _same(example, python, tolerance):
    assert [c["caption"] for c in example] == [c["caption"] for c in python]
    assert all(abs(a["log_prob"] - b["log_prob"]) < tolerance for a, b in zip(example, python))


@pytest.fixture(scope="module")
def saved_model(exported):
    out = exported["root"] / "saved_model"
    assert main(["export", str(exported["bundle"]), "--out", str(out), "--format", "saved_model"]) == 0
    return out


def test_the_saved_model_captions_image_bytes_as_captioning_caption_does(exported, saved_model, tmp_path):
    images = exported["images"]
    for mode, recipe in ((["greedy"], "greedy"), (["beam", "3"], {"beam": 3, "rerank": 0}),
                         ([], {"beam": 16, "rerank": 0})):  # serving_default
        graph = _example("caption_saved_model.py", saved_model, *mode, *images, cwd=tmp_path)
        _same(graph, _library(exported["bundle"], images, recipe), 1e-4)
    record = json.loads((saved_model / "export.json").read_text())
    assert record["format"] == "saved_model" and "serving_default" in record["signatures"]


def test_the_tflite_models_caption_as_the_keras_models_do(exported, tmp_path):
    images = exported["images"]
    python = _library(exported["bundle"], images, "greedy")
    for precision in ("float32", "int8"):
        out = tmp_path / precision
        assert main(["export", str(exported["bundle"]), "--out", str(out), "--format", "tflite",
                     "--precision", precision]) == 0
        host = _example("caption_tflite.py", out, *images, cwd=tmp_path)
        if precision == "float32":
            _same(host, python, 1e-3)
        assert len(host) == len(images) and json.loads((out / "export.json").read_text())["precision"] == precision
    size = {p: (tmp_path / p / "encoder.tflite").stat().st_size for p in ("int8", "float32")}
    assert size["int8"] < 0.4 * size["float32"]  # 8-bit weights (the tiny step model keeps float ones)


def test_a_killed_export_leaves_nothing_under_its_name_and_the_next_one_cleans_up(exported, tmp_path):
    import signal
    import time
    out = tmp_path / "killed"
    for delay in (2.0, 5.0):  # while loading the run, and while writing
        proc = subprocess.Popen([sys.executable, "-m", "captioning", "export", str(exported["bundle"]), "--out",
                                 str(out), "--format", "saved_model"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists()
    assert main(["export", str(exported["bundle"]), "--out", str(out), "--format", "saved_model"]) == 0
    assert (out / "saved_model.pb").is_file() and [p.name for p in tmp_path.iterdir()] == ["killed"]

    from captioning.errors import UsageError
    from captioning.export import export
    with pytest.raises(UsageError, match="choose one of bundle, saved_model, tflite"):
        export(exported["bundle"], tmp_path / "x", "onnx")
    with pytest.raises(UsageError, match="--precision is for --format tflite"):
        export(exported["bundle"], tmp_path / "x", "bundle", precision="int8")
