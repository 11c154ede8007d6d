"""Messages, not tracebacks: damaged files, wrong paths, full disks, pipes, quiet logs."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from captioning.features import FeatureStore

from hostile import TINY, cli, cli_process, keras


@pytest.mark.parametrize("name,content", [
    ("captions_train2014.json", {"images": {"id": 1}, "annotations": []}),
    ("captions_train2014.json", {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": ["a dog"]}),
    ("dataset_x.json", {"images": [{"filename": "a.jpg", "split": "train", "sentences": ["a dog"]}]}),
    ("dataset_x.json", {"images": "all of them"})])
def test_wrong_json_types_name_the_file(capsys, tmp_path, name, content):
    (tmp_path / name).write_text(json.dumps(content))
    code, _, err = cli(capsys, "info", tmp_path)
    assert code == 1 and name in err


def _broken_run(base, tmp_path, edit):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    edit(run)
    return run


@pytest.mark.parametrize("edit,says", [
    (lambda r: (r / "config.json").write_text("{not json"), "config.json"),
    (lambda r: (r / "config.json").write_text(json.dumps({**json.loads((r / "config.json").read_text()),
                                                          "decoder": "merge"})), "config.json"),
    (lambda r: (r / "config.json").write_text(json.dumps({k: v for k, v in json.loads(
        (r / "config.json").read_text()).items() if k != "decoder"})), "config.json"),
    (lambda r: (r / "config.json").write_text("[]"), "config.json: not a captioning run config; copy the run"),
    (lambda r: (r / "vocab.json").unlink(), "vocab.json"),
    (lambda r: (r / "vocab.json").write_text("{"), "vocab.json: cannot read vocabulary"),
    (lambda r: (r / "vocab.json").write_text("[1]"), "vocab.json: not a captioning vocabulary file; copy the run"),
    (lambda r: (r / "model.keras").write_bytes(b"PK\x03\x04 truncated"), "model.keras"),
    (lambda r: (r / "model.keras").write_text("junk"), "model.keras is not a .keras model file"),
    (lambda r: (r / "model.keras").unlink(), "model.keras")])
def test_damaged_run_folders_are_explained(base, capsys, tmp_path, edit, says):
    run = _broken_run(base, tmp_path, edit)
    image = base["data"] / "Images" / FeatureStore.open(base["store"]).ids[0]
    code, _, err = cli(capsys, "caption", image, "--run", run)
    assert code == 1 and says in err


def test_a_lambda_layer_is_refused_by_safe_mode(base, capsys, tmp_path):
    def add_lambda(run):
        inp = keras.Input((3,))
        keras.Model(inp, keras.layers.Lambda(lambda x: x * 2)(inp)).save(run / "model.keras")
    run = _broken_run(base, tmp_path, add_lambda)
    code, _, err = cli(capsys, "caption", base["data"] / "Images" / "x.jpg", "--run", run)
    assert code == 1 and "model.keras" in err and "safe mode" in err


def test_output_paths_that_are_the_wrong_kind(base, capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out",
                       tmp_path / "afile", *TINY)
    assert code == 1 and "afile" in err
    code, _, err = cli(capsys, "extract-features", base["data"] / "Images", "--backbone", "efficientnet_b0",
                       "--weights", "none", "--out", tmp_path, "--limit", "2", "--overwrite")
    assert code == 1 and str(tmp_path) in err
    code, _, err = cli(capsys, "evaluate", "--run", base["run"], "--captions", base["data"], "--features",
                       base["store"], "--out", tmp_path / "afile" / "sub")
    assert code == 1 and "afile" in err


@pytest.mark.parametrize("args,says", [
    (["caption", "x.jpg", "--run", "no/such/run"], "no/such/run"),
    (["evaluate", "--run", "RUN", "--captions", "DATA", "--features", "no/such.h5"], "no/such.h5"),
    (["fit", "--captions", "DATA", "--features", "no/such.h5", "--out", "NEW"], "no/such.h5"),
    (["info", "no/such/data"], "no/such/data"),
    (["caption", "x.jpg", "--run", "STORE"], "is a file, not a run folder"),
    (["evaluate", "--run", "RUN", "--captions", "DATA", "--features", "STORE", "--images", "no/such/dir"],
     "--images no/such/dir"),
    (["extract-features", "OTHER", "--backbone", "efficientnet_b0", "--weights", "none", "--captions", "DATA",
      "--out", "NEW"], "give the images folder these captions belong to"),
    (["extract-features", "DATA", "--backbone", "efficientnet_b0", "--weights", "OTHER", "--out", "NEW"],
     "a folder, not a file"),
    (["extract-features", "DATA", "--backbone", "efficientnet_b0", "--weights", "no/such.h5", "--out", "NEW"],
     "--weights no/such.h5: no such file")])
def test_missing_inputs_are_named(base, capsys, tmp_path, args, says):
    (tmp_path / "other").mkdir()
    subs = {"RUN": str(base["run"]), "DATA": str(base["data"]), "NEW": str(tmp_path / "new"),
            "STORE": str(base["store"]), "OTHER": str(tmp_path / "other")}
    code, _, err = cli(capsys, *[subs.get(a, a) for a in args])
    assert code == 1 and says in err
    assert not (tmp_path / "new").exists()


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A small real file system (full or read-only ones), unmounted afterwards; skipped where mounting is refused."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root in a namespace that allows it)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_full_disk_is_explained_and_the_store_is_not_damaged(base, capsys, tmp_path):
    with tmpfs(tmp_path / "small", "size=256k") as mount:
        code, _, err = cli(capsys, "extract-features", base["data"] / "Images", "--backbone", "efficientnet_b0",
                           "--weights", "none", "--spatial", "--out", mount / "f.h5")
        assert code == 1 and ("space" in err.lower()) and "f.h5" in err
        if (mount / "f.h5").exists():  # what was merged before the disk filled is a readable store
            FeatureStore.open(mount / "f.h5").close()


@pytest.mark.parametrize("size, moment", [("100k", "the next batch"), ("300k", "merging the batches")])
def test_a_disk_that_fills_during_extraction_stops_cleanly_and_the_same_command_finishes(base, tmp_path, size, moment):
    """In a fresh process (HDF5 used to crash it with SIGSEGV after a write failed half-way): exit 1
    naming the store, the batches written kept; with space freed, the same command completes."""
    args = ["extract-features", base["data"] / "Images", "--backbone", "efficientnet_b0", "--weights", "none",
            "--batch-size", "2", "--limit", "16"]
    with tmpfs(tmp_path / "small", f"size={size}") as mount:
        done = cli_process(*args, "--out", mount / "f.h5")
        assert done.returncode == 1, done.stderr[-2000:]
        assert f"{mount / 'f.h5'}: the disk is full" in done.stderr and "run the same command again" in done.stderr
        assert moment in done.stderr
        kept = len(list((mount / "f.h5.partial").glob("seg-*.h5")))
        assert kept > 0
        subprocess.run(["mount", "-o", "remount,size=16m", str(mount)], check=True)
        done = cli_process(*args, "--out", mount / "f.h5")
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"{2 * kept} already there were kept" in done.stdout
        with FeatureStore.open(mount / "f.h5") as store:
            assert len(store) == 16


def test_a_read_only_output_folder_is_explained(base, capsys, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as mount:
        code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out",
                           mount / "run", *TINY)
        assert code == 1 and "ro/run" in err
        code, _, err = cli(capsys, "evaluate", "--run", base["run"], "--captions", base["data"], "--features",
                           base["store"], "--out", mount / "ev")
        assert code == 1 and "ro/ev" in err


def test_quiet_by_default_and_verbose_accepted_after_the_command(base, tmp_path):
    """TensorFlow's C++ log lines (absl's "I0000 …", tf.data's at fit time) stay hidden unless --verbose,
    which the error messages suggest appending, so it works after the command as well as before it."""
    import re
    done = cli_process("fit", "--captions", base["data"], "--features", base["store"], "--out", tmp_path / "run", *TINY)
    assert done.returncode == 0 and not re.search(r"^[IWEF]\d{4} ", done.stderr, re.M), done.stderr
    from captioning.cli import build_parser
    for argv in (["caption", "x.jpg", "--run", "r", "--verbose"], ["-v", "caption", "x.jpg", "--run", "r"]):
        assert build_parser().parse_args(argv).verbose
    assert not build_parser().parse_args(["caption", "x.jpg", "--run", "r"]).verbose


def test_a_store_another_program_holds_open_for_writing_is_busy_not_damaged(base, capsys, tmp_path):
    store = tmp_path / "f.h5"
    shutil.copy(base["store"], store)
    with FeatureStore.open(store) as s:
        before = (list(s.ids), s[s.ids])
    holder = subprocess.Popen([sys.executable, "-c", f"import h5py, sys, time; f = h5py.File({str(store)!r}, 'a'); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        try:
            h5py.File(store, "r").close()
            pytest.skip("HDF5 file locking is off here (HDF5_USE_FILE_LOCKING=FALSE)")
        except OSError:
            pass
        code, _, err = cli(capsys, "evaluate", "--run", base["run"], "--captions", base["data"], "--features", store)
        assert code == 1 and "open for writing in another program" in err
        code, _, err = cli(capsys, "extract-features", base["data"] / "Images", "--backbone", "efficientnet_b0",
                           "--weights", "none", "--out", store, "--overwrite")
        assert code == 1 and "open for writing in another program" in err
    finally:
        holder.kill()
        holder.wait()
    with FeatureStore.open(store) as s:  # not "repaired" away by --overwrite
        assert list(s.ids) == before[0] and np.array_equal(s[s.ids], before[1])


def test_every_option_of_every_command_says_what_it_does_and_its_default(capsys):
    import argparse
    from captioning.cli import build_parser
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        silent = [a.dest for a in sub._actions if not a.help and not isinstance(a, argparse._HelpAction)]
        assert not silent, f"captioning {name}: options without help: {silent}"
        with pytest.raises(SystemExit):
            sub.parse_args(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and "(default: False)" not in text, name
    assert "(default: 16)" in " ".join(commands["fit"].format_help().split())  # --batch-size


def test_a_decoder_no_better_than_word_frequencies_is_said_so_with_what_to_do(base, tmp_path, capsys):
    args = ["fit", "--captions", base["data"], "--features", base["store"], "--out", tmp_path / "run", "--epochs", "1",
            "--units", "4", "--embed-dim", "4", "--learning-rate", "1e-6", "--self-critical-epochs", "0"]
    code, out, _ = cli(capsys, *args)
    assert code == 0 and "no better than word frequencies alone" in out
    assert f"--out {tmp_path / 'run'} --resume --epochs N`, N above 1" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["results"]["best_val_loss"] >= config["results"]["unigram_val_loss"]


def test_captioning_a_run_that_fit_is_still_training_says_so(base, tmp_path, capsys):
    from captioning.lock import WriterLock
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    (run / "model.keras").unlink()  # as during training: written at the end
    with WriterLock(run, "captioning fit"):
        code, _, err = cli(capsys, "caption", base["data"] / "Images" / "sample_00000.jpg", "--run", run)
        assert code == 1 and f"(process {os.getpid()}) is still training this run" in err
    code, _, err = cli(capsys, "caption", base["data"] / "Images" / "sample_00000.jpg", "--run", run)
    assert code == 1 and "the run did not finish; continue it with `captioning fit ... --resume`" in err


def test_a_reader_that_stops_early_gets_the_shells_code_and_no_message(base):
    read, write = os.pipe()
    os.close(read)  # like `captioning caption DIR | head` once head has exited
    with open(write, "wb") as stdout:
        done = subprocess.run([sys.executable, "-m", "captioning", "caption", base["data"] / "Images", "--run",
                               base["run"]], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=240)
    assert done.returncode == 141 and done.stderr == "", done.stderr


def test_a_disk_that_fills_during_fit_names_the_run_folder(base, capsys, tmp_path):
    with tmpfs(tmp_path / "small", "size=16k") as mount:
        code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out",
                           mount / "run", *TINY)
        assert code == 1 and "space" in err.lower() and "small/run" in err, err


def _mute(run):
    """The run's output layers (model.keras's and cross_entropy.keras's, whose captions re-ranking
    also weighs) made to end every caption at once, as an undertrained run often does."""
    from captioning.run import CROSS_ENTROPY_FILE, Run, load_model, save_model
    end = Run.load(run).vocab.end_id
    for path in [run / "model.keras", run / CROSS_ENTROPY_FILE]:
        if not path.is_file():
            continue
        model = load_model(path)
        if Run.load(run).decoder.tie_embeddings:  # the output layer is the word vectors; its bias lives there
            bias = model.get_layer("embedding").output_bias
            bias.assign(keras.ops.scatter_update(bias, [[end]], [1e4]))
        else:
            kernel, bias = model.get_layer("output").get_weights()
            bias[end] = 1e4
            model.get_layer("output").set_weights([kernel, bias])
        save_model(model, path)


def test_empty_captions_are_explained_not_left_as_blank_lines(base, capsys, tmp_path):
    run = _broken_run(base, tmp_path, _mute)
    photos = sorted((base["data"] / "Images").iterdir())[:3]
    code, out, err = cli(capsys, "caption", *photos, "--run", run, "--no-rerank")  # re-ranking may rescue a word
    assert code == 0 and out.count("\t\n") == 3
    assert "3 of 3 captions ended before any word" in err and f"--out {run} --resume --epochs N" in err
    code, out, _ = cli(capsys, "evaluate", "--run", run, "--captions", base["data"], "--features", base["store"],
                       "--limit", "5", "--out", tmp_path / "ev", "--no-rerank")
    assert code == 0 and "5 of 5 captions ended before any word" in out
    from types import SimpleNamespace
    from captioning.inference.captioner import empty_captions_note
    assert empty_captions_note([SimpleNamespace(text="a dog runs")], run) is None


def test_the_python_api_names_the_photo_it_cannot_read(base, tmp_path):
    from captioning.features.images import ImageError
    from captioning.inference import Captioner
    good = sorted((base["data"] / "Images").iterdir())[0]
    with pytest.raises(ImageError, match=f"{tmp_path / 'missing.jpg'}: file not found"):
        Captioner.load(base["run"]).caption([good, tmp_path / "missing.jpg"])
