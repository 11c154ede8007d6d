"""A run folder's extra files from somewhere else: re-ranking's neighbours.h5, matcher.keras and
cross_entropy.keras, and model.keras itself. fit records each file's sha256 in config.json, so a
file copied in from another run is refused by content; a run from before that record (0.8 and
older) is checked by shape. Each case: exit 1, the file named, the option that does without it."""

import json
import shutil

import numpy as np
import pytest

from captioning.inference import consensus, matching
from captioning.run import Run, save_model

from hostile import cli


def _image(base):
    return next((base["data"] / "Images").glob("*.jpg"))


@pytest.fixture
def run(base, tmp_path):
    return shutil.copytree(base["run"], tmp_path / "run")


def _forget_the_record(run):
    """As a run written before config.json recorded its files."""
    config = json.loads((run / "config.json").read_text())
    config.pop("files")
    (run / "config.json").write_text(json.dumps(config))


def _foreign_neighbours(path, dim):
    rng = np.random.default_rng(0)
    consensus.write(path, rng.normal(size=(12, dim)).astype(np.float32), [[["a", "dog"]]] * 12, dimensions=4)


def _foreign_matcher(path, run, extra_words=5):
    r = Run.load(run)
    dim = r.decoder.feature_dim
    save_model(matching.build(dim, len(r.vocab) + extra_words, r.decoder.max_length, np.zeros(dim), np.ones(dim)), path)


def test_fit_records_the_content_of_each_file_it_wrote(run):
    files = json.loads((run / "config.json").read_text())["files"]
    assert {"model.keras", "neighbours.h5", "matcher.keras"} <= set(files)
    assert all(len(digest) == 64 for digest in files.values())


@pytest.mark.parametrize("name, make, way_out", [
    ("neighbours.h5", lambda run: _foreign_neighbours(run / "neighbours.h5", 8), "--no-rerank"),
    ("matcher.keras", lambda run: _foreign_matcher(run / "matcher.keras", run), "--matching 0"),
])
def test_a_file_from_another_run_is_refused_by_its_content(run, base, capsys, name, make, way_out):
    make(run)
    code, _, err = cli(capsys, "caption", _image(base), "--run", run)
    assert code == 1 and str(run / name) in err and "content differs" in err and way_out in err
    code, out, err = cli(capsys, "caption", _image(base), "--run", run, *way_out.split())
    assert code == 0 and out.strip(), err


@pytest.mark.parametrize("name, make, says", [
    ("neighbours.h5", lambda run: _foreign_neighbours(run / "neighbours.h5", 576), "576-number image features"),
    ("matcher.keras", lambda run: _foreign_matcher(run / "matcher.keras", run), "another run's matcher"),
])
def test_in_an_older_run_a_file_of_other_sizes_is_refused_by_its_shape(run, base, capsys, name, make, says):
    _forget_the_record(run)
    make(run)
    code, _, err = cli(capsys, "caption", _image(base), "--run", run)
    assert code == 1 and str(run / name) in err and says in err


def test_a_neighbours_file_missing_a_dataset_is_named(run, base, capsys):
    import h5py
    _forget_the_record(run)
    with h5py.File(run / "neighbours.h5", "a") as f:
        del f["projection"]
    code, _, err = cli(capsys, "caption", _image(base), "--run", run)
    assert code == 1 and "lacks its projection" in err and "--no-rerank" in err


def test_another_decoder_as_cross_entropy_keras_is_refused_naming_candidates_model(run, base, capsys):
    _forget_the_record(run)
    _foreign_matcher(run / "cross_entropy.keras", run)  # a file of the right name and the wrong kind
    code, _, err = cli(capsys, "caption", _image(base), "--run", run)
    assert code == 1 and "cross_entropy.keras" in err and "--candidates model" in err
    code, _, err = cli(capsys, "caption", _image(base), "--run", run, "--candidates", "model")
    assert code == 0, err


def test_the_matcher_as_model_keras_is_refused_as_not_this_runs_decoder(run, base, capsys):
    shutil.copy(run / "matcher.keras", run / "model.keras")
    code, _, err = cli(capsys, "caption", _image(base), "--run", run, "--greedy")
    assert code == 1 and "model.keras is not this run's decoder" in err
