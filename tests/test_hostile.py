"""The hostile-input and crash gauntlet: every case asserts the exit code, that no traceback reaches
the user, that the message names the file or option, and that nothing finished was lost or changed.

Families: (1) resume after kill -9, (2) one writer at a time, (3) features must match the run,
(4) nothing overwritten by surprise, (5) every option validated, (6) data that is quietly wrong,
(7) messages, not tracebacks.
"""

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from captioning.cli import main
from captioning.console import import_keras
from captioning.features import FeatureStore, extract_features
from captioning.features.store import FeatureStoreWriter
from captioning.training import FitOptions, fit

keras = import_keras()
TINY = ["--epochs", "2", "--batch-size", "8", "--units", "8", "--embed-dim", "8", "--patience", "10",
        "--self-critical-epochs", "0"]  # the self-critical epochs have their own tests


def cli(capsys, *args):
    """Run the CLI in this process; return (exit code, stdout, stderr). No traceback may reach stderr."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def cli_process(*args, timeout=240):
    done = subprocess.run([sys.executable, "-m", "captioning", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def digest(folder: Path) -> dict:
    """Every file under ``folder`` → its sha256: 'nothing changed' is an equality of these."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(sample_dir, tmp_path_factory):
    """A feature store of the sample set and a finished tiny run on it."""
    root = tmp_path_factory.mktemp("hostile")
    store = extract_features(sample_dir / "Images", backbone="efficientnet_b0", weights="none", out=root / "f.h5",
                             show_progress=False).store.path
    fit(sample_dir, store, root / "run", FitOptions(epochs=2, batch_size=8, units=8, embed_dim=8), verbose=0)
    return {"data": sample_dir, "store": store, "run": root / "run", "root": root}


# --- (5) every option validated: usage errors (exit 2) that name the option and its range ----------
FIT_BAD = [("--epochs", "0"), ("--epochs", "-3"), ("--epochs", "abc"), ("--batch-size", "0"), ("--units", "0"),
           ("--embed-dim", "0"), ("--dropout", "1"), ("--dropout", "-0.1"), ("--dropout", "nan"),
           ("--learning-rate", "0"), ("--learning-rate", "-1e-3"), ("--max-length-percentile", "101"),
           ("--max-length-percentile", "0"), ("--min-count", "0"), ("--patience", "0"), ("--attention-dim", "0"),
           ("--doubly-stochastic", "-1"), ("--doubly-stochastic", "inf"), ("--learning-rate", "inf"),
           ("--decoder", "transformer"), ("--monitor", "accuracy")]


@pytest.mark.parametrize("option,value", FIT_BAD)
def test_fit_option_out_of_range_is_a_usage_error(capsys, tmp_path, option, value):
    code, _, err = cli(capsys, "fit", "--captions", tmp_path, "--features", tmp_path / "f.h5", "--out",
                       tmp_path / "run", option, value)
    assert code == 2 and option in err
    assert not (tmp_path / "run").exists()


def test_a_range_open_at_the_top_is_said_plainly(capsys, tmp_path):
    code, _, err = cli(capsys, "fit", "--captions", tmp_path, "--features", tmp_path / "f.h5", "--out",
                       tmp_path / "run", "--dropout", "1")
    assert code == 2 and "--dropout: 1 is out of range: must be ≥ 0 and < 1" in err, err


CAPTION_BAD = [("--beam", "-1"), ("--max-length", "1"), ("--temperature", "0"), ("--temperature", "-2"),
               ("--top-k", "-1"), ("--length-penalty", "-1"), ("--length-penalty", "inf"), ("--temperature", "inf"),
               ("--matching", "-1"), ("--matching", "inf"), ("--matching", "nan"),
               ("--likelihood", "-0.1"), ("--likelihood", "inf")]


@pytest.mark.parametrize("option,value", CAPTION_BAD)
def test_caption_option_out_of_range_is_a_usage_error(capsys, tmp_path, option, value):
    code, _, err = cli(capsys, "caption", tmp_path / "x.jpg", "--run", tmp_path, option, value)
    assert code == 2 and option in err


@pytest.mark.parametrize("command,option,value", [
    ("evaluate", "--limit", "0"), ("evaluate", "--limit", "-5"), ("evaluate", "--beam", "-2"),
    ("extract-features", "--batch-size", "0"), ("extract-features", "--limit", "0"),
    ("extract-features", "--workers", "-1"), ("extract-features", "--shard", "4/3"),
    ("extract-features", "--shard", "half"), ("extract-features", "--backbone", "resnet5"),
    ("demo", "--scenes", "0"), ("demo", "--scenes", "-5"), ("demo", "--images", "2"), ("demo", "--epochs", "0"),
    ("demo", "--backbone", "nonsense"), ("make-sample", "--scenes", "2"), ("info", "--min-count", "0")])
def test_other_options_out_of_range_are_usage_errors(capsys, tmp_path, command, option, value):
    args = {"evaluate": ["evaluate", "--run", tmp_path, "--captions", tmp_path, "--features", tmp_path / "f.h5"],
            "extract-features": ["extract-features", tmp_path, "--backbone", "resnet50"],
            "demo": ["demo", "--out", tmp_path / "demo"], "make-sample": ["make-sample", tmp_path / "sample"],
            "info": ["info", tmp_path]}[command]
    code, _, err = cli(capsys, *args, option, value)
    assert code == 2 and option in err
    assert not (tmp_path / "demo").exists() and not (tmp_path / "sample").exists()  # refused before any work


@pytest.mark.parametrize("args, says", [
    (["extract-features", "IMG", "--backbone", "resnet50", "-o", "f.h5"], "did you mean --out instead of -o?"),
    (["caption", "x.jpg", "--run", "r", "--beem", "3"], "did you mean --beam instead of --beem?"),
    (["info", "DATA", "--wat"], "unrecognized arguments: --wat; see `captioning info --help`")])
def test_an_unknown_option_names_the_command_and_the_option_meant(capsys, tmp_path, args, says):
    code, _, err = cli(capsys, *[str(tmp_path) if a in ("IMG", "DATA") else a for a in args])
    assert code == 2 and says in err
    assert f"usage: captioning {args[0]}" in err and f"captioning {args[0]}: error" in err


def test_a_backbone_name_may_be_spelled_as_keras_does(capsys, tmp_path):
    code, _, err = cli(capsys, "extract-features", tmp_path / "none", "--backbone", "MobileNet-V2", "--weights", "none")
    assert code == 1 and "--backbone" not in err  # accepted; the missing folder is what stops it


@pytest.mark.parametrize("name,says", [("out.txt", "format"), ("noext", "format"), ("folder.png", "is a folder"),
                                       ("afile/x.png", "is a file, not a folder")])
def test_a_figure_path_that_cannot_be_written_is_a_usage_error_before_any_work(base, capsys, tmp_path, name, says):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "afile").write_text("x")
    image = base["data"] / "Images" / FeatureStore.open(base["store"]).ids[0]
    for option in ("--figure", "--attention-figure"):
        code, out, err = cli(capsys, "caption", image, "--run", base["run"], option, tmp_path / name)
        assert code == 2 and option in err and says in err and not out


def test_figures_go_into_new_folders_in_the_format_named_and_captions_come_first(base, capsys, tmp_path):
    images = [base["data"] / "Images" / i for i in FeatureStore.open(base["store"]).ids[:2]]
    code, out, err = cli(capsys, "caption", *images, "--run", base["run"], "--figure", tmp_path / "a" / "b" / "grid.pdf")
    assert code == 0 and len(out.splitlines()) == 2
    assert (tmp_path / "a" / "b" / "grid.pdf").read_bytes().startswith(b"%PDF")
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["grid.pdf"]  # no temporary file left


def test_a_figure_of_many_photos_shows_the_first_page_and_says_so(base, capsys, tmp_path):
    images = [base["data"] / "Images" / i for i in FeatureStore.open(base["store"]).ids[:30]]
    code, out, err = cli(capsys, "caption", *images, "--run", base["run"], "--figure", tmp_path / "grid.png")
    assert code == 0 and len(out.splitlines()) == 30 and "the first 24 of 30" in err
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_caption_takes_folders_and_explains_web_addresses(base, capsys, tmp_path):
    ids = FeatureStore.open(base["store"]).ids[:3]
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i, name in enumerate(ids):
        shutil.copy(base["data"] / "Images" / name, photos / ("sub" if i == 2 else "") / f"p{i}.jpg")
    (photos / "notes.txt").write_text("not a photo")
    (tmp_path / "empty").mkdir()
    code, out, err = cli(capsys, "caption", photos, "https://example.org/dog.jpg", "--run", base["run"])
    assert code == 3 and [line.split("\t")[0] for line in out.splitlines()] == \
        [str(photos / "p0.jpg"), str(photos / "p1.jpg"), str(photos / "sub" / "p2.jpg")]
    assert "https://example.org/dog.jpg: cannot caption: a web address: download the image first" in err
    code, out, err = cli(capsys, "caption", tmp_path / "empty", "--run", base["run"])
    assert code == 1 and "empty" in err and "no image files" in err and not out


def test_a_failed_atomic_write_names_the_file_asked_for_not_its_temporary_name(tmp_path):
    from captioning import atomic
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError) as e:
        atomic.write_text(tmp_path / "afile" / "out.json", "{}")
    assert e.value.filename == str(tmp_path / "afile" / "out.json")


@pytest.mark.parametrize("command", ["caption", "evaluate"])
@pytest.mark.parametrize("options,named", [
    (["--sample", "--beam", "3"], "--sample and --beam"), (["--temperature", "0.5"], "--temperature"),
    (["--beam", "3", "--top-k", "5"], "--top-k"), (["--seed", "2"], "--seed"), (["--rerank", "10"], "--rerank"),
    (["--beam", "1", "--length-penalty", "1"], "--length-penalty"), (["--sample", "--rerank", "5"], "--rerank")])
def test_an_option_that_would_have_no_effect_is_refused(capsys, tmp_path, command, options, named):
    args = (["caption", tmp_path / "x.jpg"] if command == "caption" else
            ["evaluate", "--captions", tmp_path, "--features", tmp_path / "f.h5"])
    code, out, err = cli(capsys, *args, "--run", tmp_path / "no-run-needed", *options)
    assert code == 2 and named in err and not out  # refused before the (missing) run is even read


def test_options_that_do_apply_are_accepted(base, capsys):
    image = base["data"] / "Images" / FeatureStore.open(base["store"]).ids[0]
    for options in (["--beam", "3", "--rerank", "5", "--length-penalty", "1"],
                    ["--sample", "--temperature", "0.5", "--top-k", "5", "--seed", "1", "--rerank", "0"]):
        code, out, _ = cli(capsys, "caption", image, "--run", base["run"], *options)
        assert code == 0 and out.startswith(str(image)), options


def test_top_k_larger_than_the_vocabulary_is_a_usage_error(base, capsys):
    image = base["data"] / "Images" / FeatureStore.open(base["store"]).ids[0]
    code, _, err = cli(capsys, "caption", image, "--run", base["run"], "--sample", "--top-k", "100000")
    assert code == 2 and "--top-k" in err and "vocabulary size" in err


def test_min_count_that_leaves_no_words_is_a_usage_error(base, capsys, tmp_path):
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out",
                       tmp_path / "run", "--min-count", "1000000", *TINY)
    assert code == 2 and "--min-count" in err


def test_attention_figure_for_a_pooled_run_is_a_usage_error_before_any_work(base, capsys, tmp_path):
    code, out, err = cli(capsys, "caption", base["data"] / "Images" / "x.jpg", "--run", base["run"],
                         "--attention-figure", tmp_path / "a.png")
    assert code == 2 and "--attention-figure" in err and not out


def test_deprecated_model_spelling_still_works_with_a_note(base, capsys):
    image = base["data"] / "Images" / FeatureStore.open(base["store"]).ids[0]
    code, out, err = cli(capsys, "caption", image, "--model", base["run"])
    assert code == 0 and "deprecated" in err and "--run" in err and out.strip()


# --- (4) nothing overwritten by surprise ----------------------------------------------------------
def test_fit_refuses_a_folder_with_someone_elses_files(base, capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("keep me")
    before = digest(out)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", out, *TINY)
    assert code == 1 and "not empty" in err and "config.json" in err and digest(out) == before


def test_fit_refuses_a_finished_run_and_points_to_resume(base, capsys):
    before = digest(base["run"])
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out",
                       base["run"], *TINY)
    assert code == 1 and "--resume" in err and digest(base["run"]) == before


# --- (3) features must match the run ----------------------------------------------------------------
def _other_store(base, tmp_path, **kw):
    return extract_features(base["data"] / "Images", backbone="efficientnet_b0", out=tmp_path / "other.h5",
                            show_progress=False, **{"weights": "none", **kw}).store.path


@pytest.mark.parametrize("kw,field", [(dict(seed=1), "weights"), (dict(pooling="max"), "pooling")])
def test_evaluate_refuses_features_of_another_network(base, capsys, tmp_path, kw, field):
    other = _other_store(base, tmp_path, **kw)
    code, _, err = cli(capsys, "evaluate", "--run", base["run"], "--captions", base["data"], "--features", other)
    assert code == 1 and "made differently" in err and field in err and str(other) in err


def test_resume_refuses_features_of_another_network_and_changes_nothing(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    before = digest(run)
    other = _other_store(base, tmp_path, seed=3)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", other, "--out", run, "--resume",
                       "--epochs", "3")
    assert code == 1 and "made differently" in err and digest(run) == before


def _copy_store(src, dst, features=None, drop_rows=0):
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        g.attrs.update(dict(f.attrs))
        x = f["features"][()] if features is None else features(f["features"][()])
        g.create_dataset("features", data=x[: len(x) - drop_rows])
        g.create_dataset("image_ids", data=f["image_ids"][()], dtype=h5py.string_dtype("utf-8"))
    return dst


def test_non_finite_features_are_refused_naming_images(base, capsys, tmp_path):
    def poison(x):
        x = x.copy()
        x[:5, 0] = np.nan
        return x
    bad = _copy_store(base["store"], tmp_path / "nan.h5", poison)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", bad, "--out", tmp_path / "r", *TINY)
    assert code == 1 and "non-finite" in err and "nan.h5" in err


def test_evaluate_refuses_non_finite_features(base, capsys, tmp_path):
    def poison(x):
        x = x.copy()
        x[:, 1] = np.inf
        return x
    bad = _copy_store(base["store"], tmp_path / "inf.h5", poison)
    code, _, err = cli(capsys, "evaluate", "--run", base["run"], "--captions", base["data"], "--features", bad,
                       "--out", tmp_path / "ev")
    assert code == 1 and "non-finite" in err and "inf.h5" in err and not (tmp_path / "ev").exists()


def test_store_with_fewer_rows_than_ids_is_refused(base, capsys, tmp_path):
    bad = _copy_store(base["store"], tmp_path / "short.h5", drop_rows=3)
    code, _, err = cli(capsys, "evaluate", "--run", base["run"], "--captions", base["data"], "--features", bad)
    assert code == 1 and "feature rows" in err and "short.h5" in err


def test_evaluate_notes_images_without_features(base, capsys, tmp_path):
    test_images = set(pd.read_csv(base["data"] / "Flickr_8k.testImages.txt", header=None)[0])
    store = FeatureStore.open(base["store"])
    keep = [i for i in store.ids if i not in sorted(test_images)[:2]]
    w = FeatureStoreWriter(tmp_path / "part.h5", store.attrs)
    w.write_batch(keep, store[keep])
    part = w.finalize(True).path
    code, out, _ = cli(capsys, "evaluate", "--run", base["run"], "--captions", base["data"], "--features", part,
                       "--out", tmp_path / "ev")
    assert code == 0 and f"scored {len(test_images) - 2} of the {len(test_images)} test images" in out


def test_evaluate_says_when_the_example_photos_are_not_where_it_looked(base, capsys, tmp_path):
    code, out, _ = cli(capsys, "evaluate", "--run", base["run"], "--captions", base["data"], "--features",
                       base["store"], "--limit", "4", "--out", tmp_path / "with")
    assert code == 0 and "image unavailable" not in out
    (tmp_path / "elsewhere").mkdir()
    code, out, _ = cli(capsys, "evaluate", "--run", base["run"], "--captions", base["data"], "--features",
                       base["store"], "--limit", "4", "--out", tmp_path / "without", "--images", tmp_path / "elsewhere")
    assert code == 0 and "shows 4 of its 4 photos as 'image unavailable'" in out and "--images" in out


# --- (6) data that is quietly wrong -----------------------------------------------------------------
def test_unbalanced_quote_in_csv_names_file_and_line(capsys, tmp_path):
    lines = ["image,caption", "a.jpg,A dog runs", 'b.jpg,"A cat sits', "c.jpg,A bird flies", "d.jpg,Two men"]
    (tmp_path / "captions.txt").write_text("\n".join(lines))
    code, _, err = cli(capsys, "info", tmp_path)
    assert code == 1 and "captions.txt, line 3" in err and "quote" in err


def _flickr(tmp_path, captions, splits=None):
    """A Flickr8k-layout folder with these (image, caption) pairs; all images in train unless told."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    token = "\n".join(f"{i}#{n}\t{c}" for n, (i, c) in enumerate(captions))
    (tmp_path / "Flickr8k.token.txt").write_text(token)
    splits = splits or {"train": sorted({i for i, _ in captions})}
    for split, fname in (("train", "trainImages"), ("dev", "devImages"), ("test", "testImages")):
        (tmp_path / f"Flickr_8k.{fname}.txt").write_text("\n".join(splits.get(split, [])))
    return tmp_path


def test_duplicates_and_split_names_without_captions_are_noted(capsys, tmp_path):
    data = _flickr(tmp_path, [("a.jpg", "a dog"), ("a.jpg", "a dog"), ("b.jpg", "a cat")],
                   {"train": ["a.jpg", "b.jpg", "ghost.jpg"]})
    code, out, _ = cli(capsys, "info", data)
    assert code == 0 and "1 duplicate captions" in out and "1 images named in the split lists have no caption" in out


def test_karpathy_images_without_sentences_are_noted(capsys, tmp_path):
    d = {"dataset": "x", "images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "a dog"}]},
                                    {"filename": "b.jpg", "split": "train", "sentences": []}]}
    (tmp_path / "dataset_x.json").write_text(json.dumps(d))
    code, out, _ = cli(capsys, "info", tmp_path)
    assert code == 0 and "1 images have no sentences" in out


def _renamed_sample(base, tmp_path, edit):
    """The sample data set with its caption file edited; the images and features stay the same."""
    data = tmp_path / "data"
    shutil.copytree(base["data"], data, ignore=shutil.ignore_patterns("Images"))
    (data / "Images").symlink_to(base["data"] / "Images")
    token = data / "Flickr8k.token.txt"
    token.write_text("\n".join(edit(token.read_text().splitlines())))
    return data


def test_punctuation_only_captions_are_skipped_and_noted(base, capsys, tmp_path):
    data = _renamed_sample(base, tmp_path, lambda lines: [line.split("\t")[0] + "\t?!." if n % 5 == 0 else line
                                                          for n, line in enumerate(lines)])
    code, out, _ = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", tmp_path / "r", *TINY)
    assert code == 0 and "have no words after cleaning" in out


def test_a_data_set_with_no_usable_caption_does_not_train(base, capsys, tmp_path):
    data = _renamed_sample(base, tmp_path, lambda lines: [line.split("\t")[0] + "\t..." for line in lines])
    code, _, err = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", tmp_path / "r", *TINY)
    assert code == 1 and "no train caption has a word" in err and not (tmp_path / "r" / "model.keras").exists()


def test_a_giant_caption_is_cut_at_the_length_percentile_with_a_note(base, capsys, tmp_path):
    data = _renamed_sample(base, tmp_path, lambda lines: [lines[0].split("\t")[0] + "\t" + "dog " * 10_000]
                           + lines[1:])
    code, out, _ = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", tmp_path / "r", *TINY)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert code == 0 and config["decoder"]["max_length"] < 40 and "were cut" in out


def test_a_data_set_without_dev_images_says_how_to_name_them(base, capsys, tmp_path):
    ids = FeatureStore.open(base["store"]).ids[:6]
    data = tmp_path / "data"
    data.mkdir()
    (data / "captions.csv").write_text("image,caption\n" + "".join(f"{i},a red square\n" for i in ids))
    (data / "Flickr_8k.trainImages.txt").write_text("\n".join(ids[:5]) + "\n")
    (data / "Flickr_8k.testImages.txt").write_text(ids[5] + "\n")
    code, _, err = cli(capsys, "fit", "--captions", data / "captions.csv", "--features", base["store"], "--out",
                       tmp_path / "run", *TINY)
    assert code == 1 and "no dev image" in err and "Flickr_8k.devImages.txt" in err
    assert not (tmp_path / "run").exists()


def test_a_single_train_image_gives_a_finite_loss(base, capsys, tmp_path):
    train = pd.read_csv(base["data"] / "Flickr_8k.trainImages.txt", header=None)[0].tolist()
    data = _renamed_sample(base, tmp_path, lambda lines: lines)
    (data / "Flickr_8k.trainImages.txt").write_text(train[0])
    code, out, _ = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", tmp_path / "r", *TINY)
    history = pd.read_csv(tmp_path / "r" / "history.csv")
    assert code == 0 and history["val_loss"].max() < 50


def test_image_list_names_outside_the_folder_are_refused(base, capsys, tmp_path):
    (tmp_path / "list.txt").write_text("ok.jpg\n../../etc/passwd\n")
    code, _, err = cli(capsys, "extract-features", base["data"] / "Images", "--backbone", "efficientnet_b0",
                       "--weights", "none", "--image-list", tmp_path / "list.txt", "--out", tmp_path / "f.h5")
    assert code == 1 and "list.txt, line 2" in err and "outside the images folder" in err


# --- (7) messages, not tracebacks -------------------------------------------------------------------
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


# --- (2) one writer at a time -------------------------------------------------------------------------
def _extract_args(base, out, *extra):
    return ["extract-features", base["data"] / "Images", "--backbone", "efficientnet_b0", "--weights", "none",
            "--out", out, "--batch-size", "4", *extra]


def test_two_extractions_at_once_one_refuses_naming_the_other(base, tmp_path):
    out = tmp_path / "f.h5"
    first = subprocess.Popen([sys.executable, "-m", "captioning", *map(str, _extract_args(base, out))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "f.h5.lock").exists():
        time.sleep(0.05)
    second = cli_process(*_extract_args(base, out))
    _, err1 = first.communicate(timeout=240)
    assert "Traceback" not in err1
    if second.returncode == 1:  # it ran while the first held the lock
        assert "being written by another extract-features" in second.stderr and f"process {first.pid}" in second.stderr
    assert first.returncode == 0
    store = FeatureStore.open(out)
    assert sorted(store.ids) == sorted(FeatureStore.open(base["store"]).ids) and store.attrs["completed"]


def test_a_writer_lock_is_removed_when_done_and_a_killed_writers_is_taken_over(tmp_path):
    from captioning.errors import CaptioningError
    from captioning.lock import WriterLock
    target = tmp_path / "f.h5"
    with WriterLock(target, "extract-features"):
        assert (tmp_path / "f.h5.lock").read_text() == str(os.getpid())
        with pytest.raises(CaptioningError, match=f"another extract-features \\(process {os.getpid()}\\)"):
            WriterLock(target, "extract-features").acquire()
        assert WriterLock(target, "extract-features").holder() == str(os.getpid())
        (tmp_path / "f.h5.partial").mkdir()  # its first batches; the store itself does not exist yet
        with pytest.raises(CaptioningError, match=f"extract-features \\(process {os.getpid()}\\) is writing it now"):
            FeatureStore.open(target)  # fit or evaluate started too early: not "an interrupted extraction"
    assert not (tmp_path / "f.h5.lock").exists()  # no litter beside the user's files
    assert WriterLock(target, "extract-features").holder() is None
    with pytest.raises(CaptioningError, match="An interrupted extraction left batches"):
        FeatureStore.open(target)
    (tmp_path / "f.h5.lock").write_text("99999999")  # left by a writer killed with -9: no lock is held on it
    with WriterLock(target, "extract-features"):
        assert (tmp_path / "f.h5.lock").read_text() == str(os.getpid())
    assert not (tmp_path / "f.h5.lock").exists()


def test_a_merge_killed_before_clean_up_is_completed_by_the_next_run(base, capsys, tmp_path):
    out = tmp_path / "f.h5"
    src = FeatureStore.open(base["store"])
    w = FeatureStoreWriter(out, src.attrs)
    for i in range(0, len(src), 16):
        w.write_batch(src.ids[i:i + 16], src.rows(np.arange(i, min(i + 16, len(src)))))
    segments = tmp_path / "keep"
    shutil.copytree(w.parts, segments)
    w.finalize(True)
    shutil.copytree(segments, w.parts)  # as if killed after the rename, before the segments were removed
    code, out_text, _ = cli(capsys, *_extract_args(base, out))
    store = FeatureStore.open(out)
    assert code == 0 and len(store) == len(src) and len(set(store.ids)) == len(store.ids)
    np.testing.assert_array_equal(store[src.ids], src[src.ids])


def test_overwrite_recovers_a_damaged_store(base, capsys, tmp_path):
    out = tmp_path / "f.h5"
    out.write_bytes(b"\x89HDF\r\n garbage")
    code, _, err = cli(capsys, *_extract_args(base, out, "--limit", "4"))
    assert code == 1 and "f.h5" in err and "--overwrite" in err
    code, _, _ = cli(capsys, *_extract_args(base, out, "--limit", "4", "--overwrite"))
    assert code == 0 and len(FeatureStore.open(out)) == 4


_SLOW_FIT = """
import sys
from captioning.training import FitOptions, fit
fit(sys.argv[1], sys.argv[2], sys.argv[3], FitOptions(epochs=int(sys.argv[4]), batch_size=4, units=16, embed_dim=8,
    patience=100, seed=3), verbose=0)
"""


def test_two_fits_on_one_folder_the_second_refuses(base, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-c", _SLOW_FIT, str(base["data"]), str(base["store"]), str(run), "4"],
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "state.json").exists():
        time.sleep(0.05)
    second = cli_process("fit", "--captions", base["data"], "--features", base["store"], "--out", run, "--resume",
                         "--epochs", "6")
    first.communicate(timeout=240)
    assert first.returncode == 0
    if second.returncode != 0:
        assert second.returncode == 1 and "being written by another captioning fit" in second.stderr


# --- (1) resume after kill -9 at random moments, in a new process ------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(base, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    done = subprocess.run([sys.executable, "-c", _SLOW_FIT, str(base["data"]), str(base["store"]), str(run), "5"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_at_a_random_moment_then_resume_equals_the_uninterrupted_run(base, uninterrupted, tmp_path, seed):
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", _SLOW_FIT, str(base["data"]), str(base["store"]), str(run), "5"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "state.json").exists():
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 3.0))  # anywhere: mid-epoch, mid-checkpoint, mid-export
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = cli_process("fit", "--captions", base["data"], "--features", base["store"], "--out", run, "--resume",
                       "--epochs", "5")
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv"), pd.read_csv(uninterrupted / "history.csv"),
                                  rtol=1e-4)
    for a, b in zip(keras.saving.load_model(run / "model.keras").get_weights(),
                    keras.saving.load_model(uninterrupted / "model.keras").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not list(run.rglob(".*tmp*")), "temporary files left behind"


def test_resume_after_early_stopping_trains_no_further_epoch(base, capsys, tmp_path):
    run = tmp_path / "run"
    fit(base["data"], base["store"], run, FitOptions(epochs=60, batch_size=8, units=16, embed_dim=8, patience=1,
                                                     learning_rate=0.05), verbose=0)
    assert json.loads((run / "checkpoints" / "state.json").read_text())["stopped"]
    history = pd.read_csv(run / "history.csv")
    (run / "model.keras").unlink()  # as if killed while exporting
    code, _, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run, "--resume",
                     "--epochs", "60")
    assert code == 0 and (run / "model.keras").is_file()
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv"), history)


def test_resume_with_nothing_to_resume_explains(base, capsys, tmp_path):
    (tmp_path / "run").mkdir()
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out",
                       tmp_path / "run", "--resume")
    assert code == 1 and "nothing to resume" in err


def test_resume_refuses_a_changed_setting_instead_of_ignoring_it(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    before = digest(run)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--units", "16", "--learning-rate", "0.01")
    assert code == 2 and "--units 16 (this run: 8)" in err and "--learning-rate 0.01 (this run: 0.001)" in err
    assert digest(run) == before
    # the run's own values, or only --epochs, resume as before
    code, out, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--units", "8", "--epochs", "3", "--self-critical-epochs", "1")
    assert code == 0 and "Trained 3 epochs" in out


def test_resume_refuses_edited_captions_and_accepts_the_same_ones_rewritten(base, capsys, tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(base["run"], run)
    shutil.copytree(base["data"], data, ignore=shutil.ignore_patterns("Images"))
    (data / "Images").symlink_to(base["data"] / "Images")
    token = data / "Flickr8k.token.txt"
    lines = token.read_text().splitlines()
    token.write_text("\r\n".join(reversed(lines)))  # the same captions: other order, other line endings
    code, out, _ = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    assert code == 0 and "Trained 3 epochs" in out
    before = digest(run)
    token.write_text("\n".join(lines).replace(" red ", " crimson "))
    code, _, err = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "4")
    assert code == 1 and "captions differ from those run" in err and "Nothing was changed" in err
    assert digest(run) == before


def test_resume_on_a_store_that_now_holds_more_images_is_refused_naming_both_counts(base, capsys, tmp_path):
    part = tmp_path / "part"
    part.mkdir()
    for i, image in enumerate(sorted((base["data"] / "Images").iterdir())):
        if i % 3:
            (part / image.name).symlink_to(image)
    store = extract_features(part, backbone="efficientnet_b0", weights="none", out=tmp_path / "f.h5",
                             show_progress=False).store.path
    run = tmp_path / "run"
    fit(base["data"], store, run, FitOptions(epochs=1, batch_size=8, units=8, embed_dim=8, self_critical_epochs=0),
        verbose=0)
    extract_features(base["data"] / "Images", backbone="efficientnet_b0", weights="none", out=store,
                     show_progress=False)  # the rest of the images join the store
    before = digest(run)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", store, "--out", run, "--resume",
                       "--epochs", "2")
    trained = json.loads((run / "config.json").read_text())["data"]["train_images"]
    assert code == 1 and f"{trained} images then" in err and "store holds other" in err
    assert digest(run) == before


def test_resume_from_a_damaged_checkpoint_says_to_start_again(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    (run / "checkpoints" / "last.keras").write_text("junk")
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    assert code == 1 and "last.keras is not a .keras model file" in err and "start the run again" in err


def test_a_half_written_checkpoint_from_a_kill_is_ignored(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    (run / "checkpoints" / ".last.tmp-99999.keras").write_bytes(b"PK\x03\x04 half")  # a kill during the write
    code, out, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    assert code == 0 and pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]
    assert not (run / "checkpoints" / ".last.tmp-99999.keras").exists()  # the resumed run removed it


def test_damaged_history_tables_are_rewritten_from_the_state_on_resume(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    tables = {name: (run / name).read_text() for name in ("history.csv", "self_critical.csv")}
    (run / "model.keras").unlink()  # as if killed while exporting
    (run / "history.csv").write_text("epoch,val_loss\n0,0.0\n")  # hand-edited: epoch 0 looks perfect
    (run / "self_critical.csv").write_text("garbage,\n")
    code, out, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run, "--resume")
    assert code == 0 and (run / "model.keras").is_file() and "Trained 2 epochs" in out  # its own --epochs, not 20
    assert {name: (run / name).read_text() for name in tables} == tables
    # more epochs: which epoch is best is judged against the recorded losses, not the edited file's
    (run / "history.csv").write_text("epoch,val_loss\n0,0.0\n")
    code, out, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    history = pd.read_csv(run / "history.csv")
    assert code == 0 and "Trained 3 epochs" in out and history["epoch"].tolist() == [0, 1, 2]
    assert history.iloc[:2].to_csv(index=False) == tables["history.csv"]
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["early_stopping"]["best"] == history["val_loss"].min()


def test_resume_with_fewer_epochs_than_done_trains_none_and_says_so(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    history = (run / "history.csv").read_text()
    code, out, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                         "--resume", "--epochs", "1")
    assert code == 0 and "--epochs 1 is fewer than the 2 epochs" in out + err
    assert (run / "history.csv").read_text() == history
    assert json.loads((run / "config.json").read_text())["training"]["epochs"] == 2


@pytest.mark.parametrize("table,says", [("epoch,val_loss\n1,2.5\n", "lacks epoch 0 of the 2"),
                                        ("epoch,val_loss\n0,abc\n", "history.csv, line 2: not a table")])
def test_a_run_from_before_recorded_rows_names_a_damaged_history_table(base, capsys, tmp_path, table, says):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    state = run / "checkpoints" / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items()
                                 if k not in ("history", "self_critical")}))
    (run / "history.csv").write_text(table)
    before = digest(run)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    assert code == 1 and says in err and digest(run) == before


@pytest.mark.slow
def test_extraction_killed_at_random_moments_resumes_to_the_same_store(base, tmp_path):
    out = tmp_path / "f.h5"
    for seed in range(3):
        child = subprocess.Popen([sys.executable, "-m", "captioning", *map(str, _extract_args(base, out))],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.Random(seed).uniform(4.0, 9.0))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert cli_process(*_extract_args(base, out)).returncode == 0
    store, ref = FeatureStore.open(out), FeatureStore.open(base["store"])
    assert sorted(store.ids) == sorted(ref.ids) and store.attrs["completed"]
    np.testing.assert_allclose(store[ref.ids], ref[ref.ids], rtol=1e-5, atol=1e-6)


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
    """The run's output layer made to end every caption at once, as an undertrained run often does."""
    from captioning.run import Run, load_model, save_model
    model = load_model(run / "model.keras")
    end = Run.load(run).vocab.end_id
    if Run.load(run).decoder.tie_embeddings:  # the output layer is the word vectors; its bias lives there
        bias = model.get_layer("embedding").output_bias
        bias.assign(keras.ops.scatter_update(bias, [[end]], [1e4]))
    else:
        kernel, bias = model.get_layer("output").get_weights()
        bias[end] = 1e4
        model.get_layer("output").set_weights([kernel, bias])
    save_model(model, run / "model.keras")


def test_empty_captions_are_explained_not_left_as_blank_lines(base, capsys, tmp_path):
    run = _broken_run(base, tmp_path, _mute)
    photos = sorted((base["data"] / "Images").iterdir())[:3]
    code, out, err = cli(capsys, "caption", *photos, "--run", run)
    assert code == 0 and out.count("\t\n") == 3
    assert "3 of 3 captions ended before any word" in err and f"--out {run} --resume --epochs N" in err
    code, out, _ = cli(capsys, "evaluate", "--run", run, "--captions", base["data"], "--features", base["store"],
                       "--limit", "5", "--out", tmp_path / "ev")
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
