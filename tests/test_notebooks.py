"""The Colab notebooks run top to bottom on the sample set, offline, as part of the test command.

04_inference trains an attention decoder on a spatial store besides its decoding lessons (four
minutes on two cores): it runs with ``pytest -m slow``; the code it teaches is tested by
test_attention.py, test_decoding.py and test_consensus.py in the default run."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")  # shared: later notebooks reuse earlier features


def test_there_are_five_notebooks_stored_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["01_data.ipynb", "02_features.ipynb", "03_train.ipynb",
                                           "04_inference.ipynb", "05_your_photos.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name
        assert "colab-badge" in nb.cells[0].source and "USE YOUR OWN DATA" in nb.cells[2].source


SLOW = {"04_inference.ipynb"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in NOTEBOOKS],
                         ids=lambda p: p.name)
def test_notebook_runs(path, workdir):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
