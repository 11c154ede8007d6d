"""Consensus re-ranking: the train captions of similar images choose among beam search's captions."""

import threading
import time

import h5py
import numpy as np
import pytest

from captioning.cli import main
from captioning.errors import CaptioningError
from captioning.inference import consensus, matching
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
        return {"search": "beam", "k": 3}

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
    assert rerank.describe() == {"search": "beam", "k": 3, "rerank": "consensus", "neighbours": 5, "likelihood": 0.02}


def test_of_captions_the_neighbours_rate_alike_the_likelier_wins(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 6)).astype(np.float32)
    refs = [[["a", "dog", "runs", "on", "grass"], ["a", "red", "ball", "on", "grass"]]] * 20  # the neighbours split
    path = consensus.write(tmp_path / consensus.FILE, features, refs, dimensions=4)
    vocab = Vocabulary(["a", "red", "ball", "dog", "runs", "on", "grass"])
    enc = lambda text: vocab.encode(text.split(), markers=False) + [vocab.end_id]  # noqa: E731
    # beam search's own choice (by length-normalised score) is the less likely caption of the two
    beam = _Beam([[(enc("a red ball on grass"), -4.0, -0.1), (enc("a dog runs on grass"), -1.0, -0.2)]])
    c = consensus.Consensus.load(path)
    weighed = consensus.ConsensusRerank(beam, c, vocab, neighbours=20)
    unweighed = consensus.ConsensusRerank(beam, c, vocab, neighbours=20, likelihood=0.0)
    assert vocab.decode(weighed(None, features[:1], 2, 3, 10).tokens[0]) == "a dog runs on grass".split()
    assert vocab.decode(unweighed(None, features[:1], 2, 3, 10).tokens[0]) == "a red ball on grass".split()
    parts = weighed.scores(features[:1], [[enc("a red ball on grass"), enc("a dog runs on grass")]], [[-4.0, -1.0]])[0]
    np.testing.assert_allclose(parts.total, parts.consensus + 0.02 * np.array([-4.0, -1.0]))
    assert "likelihood" not in unweighed.describe()


class _BeamOf(_Beam):
    """Beam search whose finished captions depend on the model searched (``steps``: a name here)."""

    def __init__(self, by_model):
        self.by_model = by_model

    def __call__(self, steps, features, start_id, end_id, max_length):
        self.alternatives = self.by_model[steps]
        return super().__call__(steps, features, start_id, end_id, max_length)


def test_a_proposers_captions_join_the_candidates_once_each(tmp_path):
    features, _, path = _train_side(tmp_path)
    vocab = Vocabulary(["a", "red", "ball", "dog", "runs", "on", "grass", "brown"])
    enc = lambda text: vocab.encode(text.split(), markers=False) + [vocab.end_id]  # noqa: E731
    dog, ball = (enc("a dog runs on grass"), -1.0, -0.2), (enc("a red ball on grass"), -2.5, -0.5)
    beam = _BeamOf({"tuned": [[dog]], "cross-entropy": [[(enc("a dog runs on grass"), -1.5, -0.3), ball]]})
    rerank = consensus.ConsensusRerank(beam, consensus.Consensus.load(path), vocab, neighbours=5,
                                       proposers=["cross-entropy"])
    hyps = rerank("tuned", features[[0]], vocab.start_id, vocab.end_id, 10)
    assert vocab.decode(hyps.tokens[0]) == "a red ball on grass".split() and hyps.log_probs == [-2.5]
    assert [a[1] for a in hyps.alternatives[0]] == [-1.0, -2.5]  # the repeated caption counted once, as the model's
    alone = consensus.ConsensusRerank(beam, rerank.consensus, vocab, neighbours=5)
    assert vocab.decode(alone("tuned", features[[0]], vocab.start_id, vocab.end_id, 10).tokens[0])[1] == "dog"
    assert rerank.describe()["candidates"] == "both" and "candidates" not in alone.describe()


def test_a_damaged_neighbours_file_is_a_clear_error(tmp_path):
    path = tmp_path / consensus.FILE
    path.write_bytes(b"not hdf5")
    with pytest.raises(CaptioningError, match="--no-rerank"):
        consensus.Consensus.load(path)


def test_fit_writes_it_and_evaluate_reranks_by_default(learnable, evaluate_dev):
    assert (learnable["run"] / consensus.FILE).is_file()
    reranked, own = evaluate_dev(learnable["run"], "r"), evaluate_dev(learnable["run"], "b", "--rerank", "0")
    assert reranked["settings"]["rerank"] == "consensus" and reranked["settings"]["neighbours"] == 40
    assert "rerank" not in own["settings"]
    assert reranked["metrics"]["BLEU-4"] > reranked["constant_caption_baseline"]["BLEU-4"]


def test_caption_without_options_decodes_the_recommended_way(learnable, capsys, tmp_path):
    """What the docs recommend is what `captioning caption` does when told nothing: the same captions
    as the library's "recommended" recipe, and the figure and eval.json say so."""
    from captioning.inference import Captioner
    images = [str(learnable["data"] / "Images" / f"sample_0000{i}.jpg") for i in range(4)]
    assert main(["caption", *images, "--run", str(learnable["run"]), "--figure", str(tmp_path / "f.png")]) == 0
    printed = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    captioner = Captioner.load(learnable["run"])
    assert printed == [c.text for c in captioner.caption(images)]  # the library's default is the same
    assert printed == [c.text for c in captioner.caption(images, "recommended")]
    assert captioner.search("recommended").describe()["rerank"] == "consensus"
    assert main(["caption", *images, "--run", str(learnable["run"]), "--greedy"]) == 0
    greedy = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert greedy == [c.text for c in captioner.caption(images, "greedy")]


def test_evaluate_names_the_recipe_it_used(evaluate_dev, learnable):
    reranked = evaluate_dev(learnable["run"], "d")  # the fixture asks for --beam 3 (fast)
    assert reranked["settings"]["decoding"] == "beam 3 + re-ranking" and reranked["settings"]["k"] == 3
    assert evaluate_dev(learnable["run"], "g", "--beam", "1")["settings"]["decoding"] == "greedy"
    assert evaluate_dev(learnable["run"], "n", "--no-rerank")["settings"]["decoding"] == "beam 3"


@pytest.mark.parametrize("name", [consensus.FILE, matching.FILE])
def test_a_run_without_a_reranking_file_decodes_as_before_with_a_note(learnable, run_without, capsys, name):
    """Runs from before 0.3 (no neighbours.h5) and 0.4 (no matcher.keras) still caption, and say how to catch up."""
    old = run_without(name)
    image = str(learnable["data"] / "Images" / "sample_00000.jpg")
    assert main(["caption", image, "--run", str(old), "--beam", "3"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(image) and f"no {name}" in err and "--resume" in err


class _Fixed:
    """A matcher whose cosines are given: the second candidate fits each photo far better."""

    def image_vectors(self, features):
        return np.zeros((len(features), 2))

    def cosines(self, image_vectors, candidates):
        return [np.array([0.0, 0.9])[: len(c)] for c in candidates]


def test_the_match_outweighs_a_small_consensus_lead(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 6)).astype(np.float32)
    refs = [[["a", "dog", "runs", "on", "grass"], ["a", "red", "ball", "on", "grass"]]] * 20  # the neighbours split
    path = consensus.write(tmp_path / consensus.FILE, features, refs, dimensions=4)
    vocab = Vocabulary(["a", "red", "ball", "dog", "runs", "on", "grass", "blue"])
    enc = lambda text: vocab.encode(text.split(), markers=False) + [vocab.end_id]  # noqa: E731
    beam = _Beam([[(enc("a dog runs on grass"), -1.0, -0.1), (enc("a red ball on grass blue"), -3.0, -0.9)]])
    plain = consensus.ConsensusRerank(beam, consensus.Consensus.load(path), vocab, neighbours=5)
    matched = consensus.ConsensusRerank(beam, plain.consensus, vocab, neighbours=5, matcher=_Fixed(), matching=1.0,
                                        retrieved=0)
    assert vocab.decode(plain(None, features[:1], 2, 3, 10).tokens[0]) == "a dog runs on grass".split()
    assert vocab.decode(matched(None, features[:1], 2, 3, 10).tokens[0]) == "a red ball on grass blue".split()
    assert matched.describe()["matching"] == 1.0 and "matching" not in plain.describe()


class _BallMatcher:
    """A matcher that fits no candidate better than another, but puts the train captions about a
    ball closest to every photo."""

    def __init__(self, vocab):
        self.ball = vocab.index["ball"]

    def cosines(self, image_vectors, candidates):
        return [np.zeros(len(c)) for c in candidates]

    def image_vectors(self, features):
        return np.tile([1.0, 0.0], (len(features), 1))

    def caption_vectors(self, captions):
        return np.array([[1.0, 0.0] if self.ball in ids else [0.0, 1.0] for ids in captions])


def test_the_train_captions_the_matcher_retrieves_vote_too(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 6)).astype(np.float32)
    refs = [[["a", "red", "ball", "on", "grass"]] if i % 2 else [["a", "dog", "runs", "on", "grass"]] for i in range(20)]
    path = consensus.write(tmp_path / consensus.FILE, features, refs, dimensions=4)
    vocab = Vocabulary(["a", "red", "ball", "dog", "runs", "on", "grass"])
    enc = lambda text: vocab.encode(text.split(), markers=False) + [vocab.end_id]  # noqa: E731
    beam = _Beam([[(enc("a dog runs on grass"), -1.0, -0.1), (enc("a red ball on grass"), -1.5, -0.3)]])
    c = consensus.Consensus.load(path)
    both = [w.split() for w in ("a dog runs on grass", "a red ball on grass")]
    a = c.scores([both], [[1, 3]], [[1, 3]])[0]  # one caption per image: both columns agree
    np.testing.assert_allclose(a[:, 0], a[:, 1])
    kwargs = dict(neighbours=20, matcher=_BallMatcher(vocab), matching=1.0)  # all 20 neighbours: a tie
    without = consensus.ConsensusRerank(beam, c, vocab, retrieved=0, **kwargs)
    retrieving = consensus.ConsensusRerank(beam, c, vocab, retrieved=5, **kwargs)
    assert vocab.decode(without(None, features[:1], 2, 3, 10).tokens[0]) == both[0]
    assert vocab.decode(retrieving(None, features[:1], 2, 3, 10).tokens[0]) == both[1]
    scores = retrieving.scores(features[:1], [[t for t, _, _ in beam.alternatives[0]]])[0]
    assert scores.retrieved[1] > 0 == scores.retrieved[0] and scores.consensus[0] == pytest.approx(scores.consensus[1])
    assert retrieving.describe()["retrieved"] == 5


class _TwoStage:
    """A re-ranking search that records when each half ran and on which thread."""

    def __init__(self):
        self.events = []

    def _log(self, what, batch):
        self.events.append((what, int(batch[0]), threading.current_thread().name, time.monotonic()))

    def candidates(self, steps, batch, start_id, end_id, max_length):
        self._log("search", batch)
        time.sleep(0.05)
        self._log("searched", batch)
        return Hypotheses([[int(x)] for x in batch], [0.0] * len(batch), [True] * len(batch)), [[] for _ in batch]

    def choose(self, batch, found):
        self._log("rerank", batch)
        time.sleep(0.05)
        self._log("reranked", batch)
        return found[0]


def test_each_batch_is_reranked_while_the_next_one_searches_and_comes_back_in_order():
    from captioning.inference.captioner import _searched
    search = _TwoStage()
    batches = [np.array([10 * i, 10 * i + 1, 10 * i + 2]) for i in range(4)]
    out = list(_searched(search, None, batches, 2, 3, 9))
    assert [h.tokens for h in out] == [[[10 * i], [10 * i + 1], [10 * i + 2]] for i in range(4)]
    at = {(what, first): (thread, t) for what, first, thread, t in search.events}
    for i in range(4):  # each batch re-ranked in two halves (images 0-1 and 2), in two other threads at once
        halves = [at[("rerank", 10 * i)], at[("rerank", 10 * i + 2)]]
        assert halves[0][0] != halves[1][0] and at[("search", 10 * i)][0] not in {h[0] for h in halves}
        assert max(h[1] for h in halves) < min(at[("reranked", 10 * i)][1], at[("reranked", 10 * i + 2)][1])
    assert all(at[("search", 10 * i + 10)][1] < at[("reranked", 10 * i)][1] for i in range(3))  # side by side
