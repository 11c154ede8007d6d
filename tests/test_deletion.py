"""The deletion check of attention maps: on a step model whose "dog" reads one known cell, hiding
the map's top cell must cost "dog" its probability and hiding other cells must not; function words,
which read no cell, lose nothing. On a real attention run, the unhidden scores are the caption's own."""

import numpy as np

from captioning.decoders.steps import StepModel
from captioning.evaluation.deletion import _scored, deletion_drops
from captioning.inference.search import Caption

START, END, DOG, THE = 1, 2, 3, 4


class DogReadsCellFour(StepModel):
    """After "the", p(dog) grows with channel 0 of cell 4; every other step is certain of its word."""

    def start(self, features):
        return [np.asarray(features, np.float32)]

    def step(self, tokens, state):
        logits = np.full((len(tokens), 5), -30.0)
        logits[:, THE] = np.where(tokens == START, 0.0, -30.0)
        logits[:, DOG] = np.where(tokens == THE, 8.0 * state[0][:, 4, 0] - 4.0, -30.0)
        logits[:, END] = np.where(tokens == THE, 0.0, np.where(tokens == DOG, 0.0, -30.0))
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True), state


def test_hiding_the_cell_a_word_reads_costs_that_word_and_only_that_word():
    rng = np.random.default_rng(0)
    features = rng.normal(0, 0.1, (40, 9, 2)).astype(np.float32)
    features[:, 4, 0] = 1.0  # the dog's cell; the average cell has 1/9 of it
    looks_at_four = np.full(9, 0.02)
    looks_at_four[4] = 0.84
    captions = [Caption([THE, DOG, END], ["the", "dog"], "the dog", 0.0, True,
                        np.stack([np.full(9, 1 / 9), looks_at_four, np.full(9, 1 / 9)])) for _ in features]
    drops = deletion_drops(DogReadsCellFour(), features, captions, START, k=1, seed=0)
    assert drops.count("object") == drops.count("function") == 40
    assert drops.mean("object", "top") > 2.0  # log p(dog) -0.02 with its cell, -3.1 without
    assert drops.mean("object", "bottom") == 0.0  # cell 4 is never the least-looked-at
    assert 0 < drops.mean("object", "random") < drops.mean("object", "top") / 4  # 1 time in 9 it hits cell 4
    assert drops.top_beats_random("object") > 0.8
    for mask in ("top", "random", "bottom"):
        assert abs(drops.mean("function", mask)) < 1e-9  # "the" reads no cell
    np.testing.assert_allclose(drops.top_mass["object"], 0.84)
    assert "object words (40): top" in drops.describe()


def test_unhidden_scores_are_the_captions_own_on_an_attention_run(attention_run):
    from captioning.inference import Captioner
    run, store = attention_run
    cap = Captioner.load(run)
    grids = store[store.ids[:6]].astype(np.float32)
    captions = cap.caption_features(grids, "greedy")
    rows = [(i, t) for i, c in enumerate(captions) for t in range(len(c.tokens))]
    tokens = np.zeros((len(rows), max(len(c.tokens) for c in captions)), np.int64)
    for n, (i, _) in enumerate(rows):
        tokens[n, :len(captions[i].tokens)] = captions[i].tokens
    log_p = _scored(cap.steps, lambda batch: grids[[rows[n][0] for n in batch]], tokens,
                    np.array([t for _, t in rows]), cap.vocab.start_id, batch_rows=7)
    per_caption = np.bincount([i for i, _ in rows], weights=log_p)
    np.testing.assert_allclose(per_caption, [c.log_prob for c in captions], atol=1e-4)
