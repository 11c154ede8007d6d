"""Consensus re-ranking: the train captions of similar images choose among beam search's captions."""

import json

import h5py
import numpy as np
import pytest

from captioning.cli import main
from captioning.errors import CaptioningError
from captioning.inference import consensus
from captioning.inference.search import Hypotheses
from captioning.data import Vocabulary


def _train_side(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 12)).astype(np.float32)
    features[:10, :4] += 4.0  # ten "ball" photos, far from the rest
    refs = [[["a", "red", "ball", "on", "grass"], ["a", "red", "ball"]] if i < 10 else
            [["a", "dog", "runs"], ["a", "brown", "dog", "runs", "on", "grass"]] for i in range(30)]
    return features, refs, consensus.write(tmp_path / consensus.FILE, features, refs, dimensions=8)


def test_written_neighbours_find_each_train_image_first(tmp_path):
    features, refs, path = _train_side(tmp_path)
    c = consensus.Consensus.load(path)
    assert c.projection.shape == (12, 8)
    np.testing.assert_array_equal(c.neighbours(features, 3)[:, 0], np.arange(30))
    near = c.neighbours(features[:1] + 0.01, 5)[0]
    assert (near < 10).all()  # a ball photo's neighbours are ball photos
    with h5py.File(path) as f:
        assert f.attrs["format"] == consensus.FORMAT and len(f["captions"]) == 60


class _Beam:
    """Beam search's output fixed in advance: its own choice first, then the other finished captions."""

    def __init__(self, alternatives):
        self.alternatives = alternatives

    def describe(self):
        return {"strategy": "beam", "k": 3}

    def __call__(self, steps, features, start_id, end_id, max_length):
        return Hypotheses([a[0][0] for a in self.alternatives], [a[0][1] for a in self.alternatives],
                          [True] * len(self.alternatives), [], self.alternatives)


def test_the_caption_the_neighbours_agree_with_wins(tmp_path):
    features, _, path = _train_side(tmp_path)
    vocab = Vocabulary(["a", "red", "ball", "dog", "runs", "on", "grass", "brown"])
    enc = lambda text: vocab.encode(text.split(), markers=False) + [vocab.end_id]  # noqa: E731
    alternatives = [[(enc("a dog runs on grass"), -1.0, -0.2), (enc("a red ball on grass"), -2.0, -0.4)],
                    [(enc("a dog runs on grass"), -1.0, -0.2), (enc("a red ball on grass"), -2.0, -0.4)]]
    rerank = consensus.ConsensusRerank(_Beam(alternatives), consensus.Consensus.load(path), vocab, neighbours=5)
    hyps = rerank(None, features[[0, 20]], vocab.start_id, vocab.end_id, 10)
    assert [vocab.decode(t) for t in hyps.tokens] == [["a", "red", "ball", "on", "grass"], ["a", "dog", "runs", "on", "grass"]]
    assert hyps.log_probs == [-2.0, -1.0]
    assert rerank.describe() == {"strategy": "beam", "k": 3, "rerank": "consensus", "neighbours": 5}


def test_a_damaged_neighbours_file_is_a_clear_error(tmp_path):
    path = tmp_path / consensus.FILE
    path.write_bytes(b"not hdf5")
    with pytest.raises(CaptioningError, match="--rerank 0"):
        consensus.Consensus.load(path)


def test_fit_writes_it_and_evaluate_reranks_by_default(learnable, tmp_path):
    run = learnable["run"]
    assert (run / consensus.FILE).is_file()
    args = ["evaluate", "--captions", str(learnable["data"]), "--features", str(learnable["features"]),
            "--split", "dev", "--beam", "3"]
    assert main([*args, "--run", str(run), "--out", str(tmp_path / "r")]) == 0
    assert main([*args, "--run", str(run), "--out", str(tmp_path / "b"), "--rerank", "0"]) == 0
    reranked, own = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("r", "b"))
    assert reranked["settings"]["rerank"] == "consensus" and reranked["settings"]["neighbours"] == 40
    assert "rerank" not in own["settings"]
    assert reranked["metrics"]["BLEU-4"] > reranked["constant_caption_baseline"]["BLEU-4"]


def test_a_run_without_neighbours_decodes_as_before_with_a_note(learnable, tmp_path, capsys):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(learnable["run"], old)
    (old / consensus.FILE).unlink()
    image = str(learnable["data"] / "Images" / "sample_00000.jpg")
    assert main(["caption", image, "--run", str(old), "--beam", "3"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(image) and "no neighbours.h5" in err and "--resume" in err
