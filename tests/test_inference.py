import itertools
import json

import numpy as np
import pytest

from captioning.cli import main
from captioning.backend import import_keras
from captioning.data import Vocabulary
from captioning.evaluation import bleu_scores, evaluate
from captioning.features import FeatureStore
from captioning.inference import BeamSearch, Captioner, Greedy, PrefixSteps, RandomSampler, StepModel, step_model
from captioning.decoders import DecoderConfig
from captioning.decoders import build as build_decoder

keras = import_keras()
START, END = 2, 3


class MarkovSteps(StepModel):
    """A tiny fixed model: log p(next | last token, image) from a table, so every sequence can be
    enumerated. The state is the last token (carried) and the image id."""

    def __init__(self, vocab_size=6, seed=0, end_bias=0.0):
        rng = np.random.default_rng(seed)
        logits = rng.normal(size=(2, vocab_size, vocab_size)) * 2
        logits[..., :START] = -np.inf  # never pad/unk/start
        logits[..., START] = -np.inf
        logits[..., END] += end_bias
        self.table = logits - np.log(np.exp(logits).sum(-1, keepdims=True))

    def start(self, features):
        return [np.asarray(features, np.int64).reshape(-1)]

    def step(self, tokens, state):
        (image,) = state
        return self.table[image, tokens], [image]

    def logp(self, image, seq):
        prev, total = START, 0.0
        for t in seq:
            total += self.table[image, prev, t]
            prev = t
        return total


def exhaustive(steps, image, max_length, score):
    best = None
    words = range(END, steps.table.shape[-1])
    for n in range(1, max_length):
        for seq in itertools.product(words, repeat=n):
            if END in seq[:-1] or seq[-1] != END:
                continue
            s = score(steps.logp(image, seq), len(seq))
            if best is None or s > best[0]:
                best = (s, list(seq))
    return best[1]


@pytest.mark.parametrize("seed", range(4))
def test_wide_beam_equals_exhaustive_search(seed):
    steps = MarkovSteps(seed=seed)
    beam = BeamSearch(k=64, alpha=0.7)
    hyps = beam(steps, np.array([0, 1]), START, END, max_length=5)
    for image in (0, 1):
        assert hyps.tokens[image] == exhaustive(steps, image, 5, beam.score)
        assert hyps.log_probs[image] == pytest.approx(steps.logp(image, hyps.tokens[image]))


def test_beam_one_equals_greedy():
    steps = MarkovSteps(seed=7)
    for a, b in [(BeamSearch(1, alpha=0.0)(steps, np.array([0, 1]), START, END, 8),
                  Greedy()(steps, np.array([0, 1]), START, END, 8))]:
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.log_probs, b.log_probs)


def test_model_that_never_ends_returns_best_partial_caption():
    steps = MarkovSteps(seed=1, end_bias=-np.inf)
    for strategy in (Greedy(), BeamSearch(3), RandomSampler(seed=0)):
        hyps = strategy(steps, np.array([0, 1]), START, END, max_length=6)
        assert all(len(t) == 5 and END not in t for t in hyps.tokens)
        assert hyps.finished == [False, False] and all(np.isfinite(hyps.log_probs))


def test_sampling_is_reproducible_and_respects_top_k():
    steps = MarkovSteps(seed=3)
    images = np.zeros(50, int)
    a = RandomSampler(temperature=1.0, seed=11)(steps, images, START, END, 6).tokens
    b = RandomSampler(temperature=1.0, seed=11)(steps, images, START, END, 6).tokens
    c = RandomSampler(temperature=1.0, seed=12)(steps, images, START, END, 6).tokens
    assert a == b and a != c
    top1 = RandomSampler(top_k=1, seed=5)(steps, images[:2], START, END, 6).tokens
    assert top1 == Greedy()(steps, images[:2], START, END, 6).tokens


@pytest.mark.parametrize("kind,rnn", [("merge", "lstm"), ("init-inject", "lstm"), ("pre-inject", "lstm"),
                                      ("inject", "lstm"), ("merge", "gru"), ("pre-inject", "gru"), ("inject", "gru")])
def test_stateful_step_matches_full_prefix_model(kind, rnn):
    from captioning.decoders.recurrent import RecurrentSteps
    keras.utils.set_random_seed(3)
    cfg = DecoderConfig(kind, vocab_size=10, feature_dim=5, max_length=7, embed_dim=6, units=8, rnn=rnn)
    model = build_decoder(cfg)
    stateful = step_model(model, cfg)
    full = PrefixSteps(model, fixed_length=cfg.max_length - 1 if kind == "inject" else None)
    assert isinstance(stateful, RecurrentSteps)
    feats = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    s1, s2 = stateful.start(feats), full.start(feats)
    tokens = np.full(3, START)
    for t in range(5):
        lp1, s1 = stateful.step(tokens, s1)
        lp2, s2 = full.step(tokens, s2)
        np.testing.assert_allclose(lp1, lp2, atol=2e-5)
        tokens = np.argmax(lp1[:, 1:], -1) + 1  # never the padding id, which a prefix model reads as "no word"


def test_bleu_matches_hand_computation():
    hyp, ref = ["a", "b", "c", "d"], ["a", "b", "c", "e"]
    s = bleu_scores([[ref]], [hyp])
    assert s["BLEU-1"] == pytest.approx(3 / 4)
    assert s["BLEU-2"] == pytest.approx((3 / 4 * 2 / 3) ** 0.5)
    assert s["BLEU-3"] == pytest.approx((3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3))
    # brevity penalty: a 2-word hypothesis against a 4-word reference
    short = bleu_scores([[ref]], [["a", "b"]])["BLEU-1"]
    assert short == pytest.approx(np.exp(1 - 4 / 2))
    # every reference counts: the closest-length one sets the penalty, any one can match
    assert bleu_scores([[["x", "y"], hyp]], [hyp])["BLEU-4"] == pytest.approx(1.0)


def test_trained_run_captions_and_scores_far_above_a_constant(learnable, tmp_path):
    cap = Captioner.load(learnable["run"])
    with FeatureStore.open(learnable["features"]) as store:
        ids = store.ids[:4]
        from_store = cap.caption_features(store[ids])
    from_pixels = cap.caption([learnable["data"] / "Images" / i for i in ids])
    assert [c.text for c in from_pixels] == [c.text for c in from_store]  # same backbone, same init
    greedy = evaluate(learnable["run"], learnable["data"], learnable["features"], out=tmp_path / "g")
    beam = evaluate(learnable["run"], learnable["data"], learnable["features"], decoding=BeamSearch(3),
                    out=tmp_path / "b", captioner=cap)
    print(f"\nsample set (150 images) BLEU-4 greedy {greedy.metrics['BLEU-4']:.3f} beam3 "
          f"{beam.metrics['BLEU-4']:.3f} constant {greedy.baseline['BLEU-4']:.3f}")
    # random-init features depend on the backend's initialisers: JAX's separate these scenes less
    # well (BLEU-4 0.44 against a 0.30 constant, where TensorFlow's reach 0.52)
    margin = 0.15 if keras.backend.backend() == "tensorflow" else 0.1
    assert greedy.metrics["BLEU-4"] > greedy.baseline["BLEU-4"] + margin
    assert beam.metrics["BLEU-4"] > greedy.baseline["BLEU-4"] + margin
    record = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert record["settings"]["search"] == "beam" and record["settings"]["k"] == 3
    assert len(record["captions"]) == greedy.images and record["captions"][0]["references"]
    assert (tmp_path / "b" / "examples.png").stat().st_size > 10_000


def test_cli_caption_reports_bad_images_and_keeps_going(learnable, tmp_path, capsys):
    good = str(learnable["data"] / "Images" / "sample_00000.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    code = main(["caption", good, str(bad), str(tmp_path / "missing.jpg"), "--run",
                 str(learnable["run"]), "--beam", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 3
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 1 and lines[0]["image"] == good and lines[0]["caption"]
    assert "bad.jpg: cannot caption: not an image" in err and "missing.jpg: cannot caption: file not found" in err


def test_cli_evaluate_and_vocab_cleaning_recorded(learnable, tmp_path, capsys):
    assert main(["evaluate", "--run", str(learnable["run"]), "--captions", str(learnable["data"]),
                 "--features", str(learnable["features"]), "--split", "dev", "--out", str(tmp_path)]) == 0
    assert "BLEU-4" in capsys.readouterr().out
    assert Vocabulary.load(learnable["run"] / "vocab.json").cleaning.lowercase


def test_coco_metrics_match_identity_and_order():
    pytest.importorskip("pycocoevalcap")
    from captioning.metrics.coco import coco_metrics
    refs = {1: ["a red circle on the left", "a circle on the left"], 2: ["a blue square on the right"]}
    perfect = coco_metrics(refs, {1: "a red circle on the left", 2: "a blue square on the right"})
    poor = coco_metrics(refs, {1: "a blue square", 2: "a red circle on the left"})
    assert perfect["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["ROUGE-L"] == pytest.approx(1.0) and perfect["CIDEr"] > poor["CIDEr"]
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert perfect[key] > poor[key]
    if perfect["METEOR"] is not None:  # only with Java
        assert perfect["METEOR"] > poor["METEOR"]


class LowRankSteps(StepModel):
    """A larger fixed model: log p(next | last token, image) from low-rank tables over thousands of words."""

    def __init__(self, vocab_size=5000, images=6, rank=8, seed=0, end_bias=4.0):
        rng = np.random.default_rng(seed)
        self.words = rng.normal(size=(vocab_size, rank))
        self.images = rng.normal(size=(images, rank, vocab_size))
        self.bias = np.zeros(vocab_size)
        self.bias[:START + 1] = -np.inf
        self.bias[END] = end_bias

    def start(self, features):
        return [np.asarray(features, np.int64).reshape(-1)]

    def step(self, tokens, state):
        (image,) = state
        logits = np.einsum("br,brv->bv", self.words[tokens], self.images[image]) + self.bias
        return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True), [image]


def reference_beam(steps, features, k, alpha, max_length, every_finished=None):
    """The textbook beam search, one image and one candidate at a time: the oracle for the batched one
    (each beam's 2k best words; ``every_finished`` gets each image's finished captions)."""
    out = []
    for image in features:
        beams, finished = [([], 0.0, steps.start(np.array([image])))], []
        for t in range(max_length - 1):
            cands = []
            for seq, lp, state in beams:
                log_probs, new_state = steps.step(np.array([seq[-1] if seq else START]), state)
                for tok in np.argsort(-log_probs[0], kind="stable")[: 2 * k]:
                    cands.append((lp + log_probs[0, tok], seq + [int(tok)], new_state))
            cands.sort(key=lambda c: -c[0])
            beams = []
            for lp, seq, state in cands:
                if len(beams) == k:
                    break
                if seq[-1] == END:
                    finished.append((lp / len(seq) ** alpha, seq, lp))
                else:
                    beams.append((seq, lp, state))
            if len(finished) >= k or not beams:
                break
        if every_finished is not None:
            every_finished.append(sorted(seq for _, seq, _ in finished))
        if finished:
            out.append(max(finished, key=lambda f: f[0])[1])
        else:
            out.append(max(beams, key=lambda b: b[1])[0])
    return out


@pytest.mark.parametrize("k,end_bias", [(3, 6.0), (5, 6.0), (3, -np.inf)])
def test_batched_beam_equals_textbook_beam_on_thousands_of_words(k, end_bias):
    steps = LowRankSteps(end_bias=end_bias)
    images = np.arange(6)
    hyps = BeamSearch(k, alpha=0.7)(steps, images, START, END, max_length=12)
    finished = []
    assert hyps.tokens == reference_beam(steps, images, k, 0.7, 12, finished)
    assert [sorted(t for t, _, _ in a) for a in hyps.alternatives] == finished  # re-ranking's candidates too
    assert hyps.finished == [END in t for t in hyps.tokens]
    assert any(hyps.finished) == np.isfinite(end_bias)


def test_captions_never_contain_padding_unknown_or_start_tokens():
    from captioning.decoders.steps import WithoutTokens
    steps = LowRankSteps(vocab_size=50, end_bias=2.0)
    steps.bias[:3] = 5.0  # a model that prefers the forbidden ids
    safe = WithoutTokens(steps, [0, 1, 2])
    for strategy in (Greedy(), BeamSearch(3), RandomSampler(seed=1)):
        hyps = strategy(safe, np.arange(6), START, END, max_length=10)
        assert not any(set(t) & {0, 1, 2} for t in hyps.tokens)
    assert all(set(t) & {0, 1, 2} for t in Greedy()(steps, np.arange(6), START, END, 10).tokens)


def test_beam_keeps_its_finished_alternatives_best_first():
    steps = LowRankSteps(vocab_size=50, end_bias=2.0)
    hyps = BeamSearch(4)(steps, np.arange(6), START, END, max_length=10)
    for tokens, alts in zip(hyps.tokens, hyps.alternatives):
        scores = [score for _, _, score in alts]
        assert scores == sorted(scores, reverse=True)
        if alts:
            assert alts[0][0] == tokens and len(alts) >= 1


def test_padded_rows_are_powers_of_two_and_cut_from_the_outputs():
    """Under JAX each new batch size is a new compiled program: search pads its shrinking batch."""
    from captioning.decoders.steps import bucket, run_rows
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 1000)] == [1, 2, 4, 8, 8, 16, 1024]
    seen = []

    def model(inputs):
        seen.append([len(a) for a in inputs])
        return [inputs[0] * 2, inputs[1][:, :1]]

    x, y = np.arange(5.0)[:, None], np.arange(15, dtype=np.int32).reshape(5, 3)
    doubled, first = run_rows(model, [x, y], pad=True)
    assert seen == [[8, 8]]
    np.testing.assert_array_equal(doubled, x * 2)
    np.testing.assert_array_equal(first, y[:, :1])
    run_rows(model, [x, y], pad=False)
    assert seen[-1] == [5, 5]
