import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """A small built-in sample data set shared by the tests that only read it."""
    from captioning.data import make_sample
    return make_sample(tmp_path_factory.mktemp("sample") / "sample", images=60, seed=1)
