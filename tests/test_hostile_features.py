"""Features must match the run."""

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from captioning.features import FeatureStore, extract_features
from captioning.features.writer import FeatureStoreWriter

from hostile import TINY, cli, digest


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
