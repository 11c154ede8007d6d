import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """A small built-in sample data set shared by the tests that only read it."""
    from captioning.data import make_sample
    return make_sample(tmp_path_factory.mktemp("sample") / "sample", images=60, seed=1)


BACKBONE = "efficientnet_b0"  # fastest backbone whose random-init features are not degenerate


@pytest.fixture(scope="session")
def learnable(tmp_path_factory):
    """A 150-image sample set, its feature store and a merge decoder fitted on it."""
    from captioning.data import make_sample
    from captioning.features import extract_features
    from captioning.training import FitOptions, fit
    root = tmp_path_factory.mktemp("learnable")
    data = make_sample(root / "sample", images=150, seed=2)
    store = extract_features(data / "Images", backbone=BACKBONE, weights="none", out=root / "f.h5",
                             show_progress=False).store
    options = FitOptions(decoder="merge", epochs=25, batch_size=16, units=128, embed_dim=64, min_count=1, dropout=0.3,
                         patience=5, self_critical_epochs=0)  # tests/test_self_critical.py fine-tunes it
    result = fit(data, store.path, root / "run", options, verbose=0)
    return {"data": data, "features": store.path, "run": root / "run", "fit": result}


@pytest.fixture(scope="session")
def attention_run(sample_dir, tmp_path_factory):
    """An attention decoder on 7×7 grids of the sample set, trained just enough to say words:
    (run folder, its feature store)."""
    from captioning.features import extract_features
    from captioning.training import FitOptions, fit
    root = tmp_path_factory.mktemp("attention")
    store = extract_features(sample_dir / "Images", backbone=BACKBONE, weights="none", pooling="spatial",
                             dtype="float16", out=root / "grid.h5", show_progress=False).store
    fit(sample_dir, store.path, root / "run", FitOptions(decoder="attention", epochs=10, batch_size=16, units=64,
                                                         embed_dim=32, attention_dim=32, dropout=0.1, learning_rate=5e-3,
                                                         patience=20, self_critical_epochs=0), verbose=0)
    return root / "run", store


@pytest.fixture(scope="session")
def base(sample_dir, tmp_path_factory):
    """For the hostile-input tests (tests/test_hostile_*.py): a feature store of the sample set and a
    finished tiny run on it. Tests copy what they change."""
    from captioning.features import extract_features
    from captioning.training import FitOptions, fit
    root = tmp_path_factory.mktemp("hostile")
    store = extract_features(sample_dir / "Images", backbone=BACKBONE, weights="none", out=root / "f.h5",
                             show_progress=False).store.path
    fit(sample_dir, store, root / "run", FitOptions(epochs=2, batch_size=8, units=8, embed_dim=8), verbose=0)
    return {"data": sample_dir, "store": store, "run": root / "run", "root": root}


@pytest.fixture
def run_without(learnable, tmp_path):
    """A copy of the learnable run with one of its files removed (a run from an older version)."""
    import shutil

    def copy(name):
        old = tmp_path / "old"
        shutil.copytree(learnable["run"], old)
        (old / name).unlink()
        return old
    return copy


@pytest.fixture
def evaluate_dev(learnable, tmp_path):
    """``evaluate --beam 3`` of a run on the learnable set's dev split, plus options; returns eval.json."""
    import json
    from captioning.cli import main

    def run(run_dir, name, *extra):
        out = tmp_path / name
        assert main(["evaluate", "--run", str(run_dir), "--captions", str(learnable["data"]), "--features",
                     str(learnable["features"]), "--split", "dev", "--beam", "3", "--out", str(out), *extra]) == 0
        return json.loads((out / "eval.json").read_text())
    return run


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """The test command runs on several workers (pytest-xdist, ``--dist loadgroup``): the tests of a
    module that share a module-scoped fixture go to one worker, in order, so that fixture is built
    once (a dozen fits, say) and what one test leaves there (the notebooks' files) the next finds."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        if defs and any(d[-1].scope == "module" for d in defs.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
