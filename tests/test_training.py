import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from captioning.backend import import_keras
from captioning.data import Vocabulary
from captioning.errors import CaptioningError
from captioning.features.writer import FeatureStoreWriter
from captioning.decoders import DecoderConfig, caption_loss
from captioning.decoders import build as build_decoder
from captioning.run import load_config
from captioning.training import FitOptions, fit
from captioning.training.sequences import CaptionSequence, EncodedCaptions, PairSequence

keras = import_keras()


def tiny_store(tmp_path, n_images=4, dim=6):
    w = FeatureStoreWriter(tmp_path / "f.h5", {"backbone": "x", "weights": "none", "pooling": "avg",
                                               "input_size": 8, "feature_shape": [dim], "dtype": "float32"})
    w.write_batch([f"{i}.jpg" for i in range(n_images)],
                  np.random.default_rng(0).normal(size=(n_images, dim)))
    return w.finalize(True)


def encoded(vocab_words=("a", "dog", "runs", "cat")):
    vocab = Vocabulary(list(vocab_words))
    table = pd.DataFrame({"image": ["0.jpg", "0.jpg", "1.jpg", "2.jpg", "3.jpg"],
                          "caption": ["a dog runs", "a cat", "dog", "a a a dog", "cat runs"]})
    return vocab, EncodedCaptions.from_table(table, vocab, max_length=10)


def test_pairs_of_a_caption(tmp_path):
    vocab, enc = encoded()
    seq = PairSequence(EncodedCaptions(enc.images[:1], enc.ids[:1]), tiny_store(tmp_path), batch_size=1,
                       shuffle=False)
    (feats, prefixes), targets = seq[0]
    table = [(" ".join(vocab.tokens[i] for i in p if i), vocab.tokens[t]) for p, t in zip(prefixes, targets)]
    assert table == [("startseq", "a"), ("startseq a", "dog"), ("startseq a dog", "runs"),
                     ("startseq a dog runs", "endseq")]
    assert prefixes.shape == (4, 4) and prefixes[0].tolist() == [2, 0, 0, 0]  # post-padded, pad id 0
    np.testing.assert_array_equal(feats[0], feats[3])


def test_batches_by_images_and_pairs_cover_every_pair_once(tmp_path):
    _, enc = encoded()
    store = tiny_store(tmp_path)
    expected = sorted(enc.pairs())
    by_img = PairSequence(enc, store, batch_size=2, seed=3)
    assert sorted(p for b in range(len(by_img)) for p in by_img.batch_pairs(b)) == expected
    by_pair = PairSequence(enc, store, batch_size=5, seed=3, batch_by="pairs")
    assert len(by_pair) == -(-len(expected) // 5)
    assert sorted(p for b in range(len(by_pair)) for p in by_pair.batch_pairs(b)) == expected
    assert by_img[0][0][1].shape[1] <= 5  # padded only to the batch's own longest prefix


def test_reshuffles_deterministically_per_epoch(tmp_path):
    _, enc = encoded()
    store = tiny_store(tmp_path)
    a, b = PairSequence(enc, store, 1, seed=5), PairSequence(enc, store, 1, seed=5)
    order = lambda s: [s.batch_pairs(i)[0] for i in range(len(s))]  # noqa: E731
    first = order(a)
    assert first == order(b)
    a.on_epoch_end()
    b.set_epoch(1)
    assert order(a) == order(b) and sorted(order(a)) == sorted(first)
    orders = {tuple(order(a))}
    for e in range(2, 6):
        a.set_epoch(e)
        orders.add(tuple(order(a)))
    assert len(orders) > 1


def test_caption_sequence_targets_and_weights(tmp_path):
    _, enc = encoded()
    seq = CaptionSequence(enc, tiny_store(tmp_path), batch_size=4, shuffle=False, output_offset=1)
    assert len(seq) == 1  # 4 images' worth of captions: all five
    (feats, inputs), targets, weights = seq[0]
    row = [r.tolist()[:4] for r in inputs].index([2, 4, 5, 6])  # startseq a dog runs
    assert inputs.shape[1] == 8  # longest input (startseq a a a dog) is 5, rounded up to 4's multiple
    assert inputs[row].tolist()[:5] == [2, 4, 5, 6, 0]  # post-padded with 0
    assert targets[row].tolist()[:6] == [0, 4, 5, 6, 3, 0]  # offset step, a dog runs endseq, pad
    np.testing.assert_array_equal(weights, targets != 0)
    assert targets.shape[1] == inputs.shape[1] + 1 and len(feats) == len(inputs)


def length_table(n=60, seed=0):
    """Captions of 1–12 words over 20 images, so lengths vary across batches."""
    rng = np.random.default_rng(seed)
    words = ("a", "dog", "runs", "cat")
    table = pd.DataFrame({"image": [f"{i % 20}.jpg" for i in range(n)],
                          "caption": [" ".join(rng.choice(words, 1 + i % 12)) for i in range(n)]})
    vocab = Vocabulary(list(words))
    return vocab, EncodedCaptions.from_table(table, vocab, max_length=16)


def test_caption_batches_group_similar_lengths_and_cover_every_caption(tmp_path):
    _, enc = length_table()
    store = tiny_store(tmp_path, n_images=20)
    seq = CaptionSequence(enc, store, batch_size=2, seed=1)  # 3 captions per image → 6 per batch
    assert seq.captions_per_batch == 6 and len(seq) == 10
    lengths = []
    for b in range(len(seq)):
        cs = seq.batch_captions(b)
        (_, inputs), _, weights = seq[b]
        longest = max(len(enc.ids[c]) - 1 for c in cs)
        assert inputs.shape[1] == -(-longest // 4) * 4  # its own longest, rounded up to 4
        assert weights.sum() == sum(len(enc.ids[c]) - 1 for c in cs)
        lengths.append(inputs.shape[1])
    assert sorted(c for b in range(len(seq)) for c in seq.batch_captions(b)) == list(range(len(enc.ids)))
    assert lengths[0] != lengths[1]  # what Keras' TF adapter needs to accept varying lengths
    mean_padded = np.mean([max(len(enc.ids[c]) - 1 for c in seq.batch_captions(b)) for b in range(len(seq))])
    assert mean_padded < max(len(s) - 1 for s in enc.ids) - 2  # sorting, not one global length
    first = [seq.batch_captions(b) for b in range(len(seq))]
    assert first == [CaptionSequence(enc, store, 2, seed=1).batch_captions(b) for b in range(len(seq))]
    seq.on_epoch_end()
    assert [seq.batch_captions(b) for b in range(len(seq))] != first


def test_a_limit_keeps_the_first_batches_of_each_epochs_own_order(tmp_path):
    """fit --steps-per-epoch: an epoch of N batches is the first N of the epoch's full order."""
    _, enc = length_table()
    store = tiny_store(tmp_path, n_images=20)
    full, short = CaptionSequence(enc, store, 2, seed=1), CaptionSequence(enc, store, 2, seed=1, limit=3)
    for _ in range(2):
        assert len(short) == 3 and len(full) == 10
        assert [short.batch_captions(b) for b in range(3)] == [full.batch_captions(b) for b in range(3)]
        full.on_epoch_end(), short.on_epoch_end()
    assert len(CaptionSequence(enc, store, 2, seed=1, limit=50)) == 10


def test_keras_fits_caption_batches_of_varying_length(tmp_path):
    vocab, enc = length_table()
    # unshuffled, the two shortest batches come first: both length 4 unless the sequence mends it
    seq = CaptionSequence(enc, tiny_store(tmp_path, n_images=20), batch_size=2, shuffle=False)
    assert len({seq[b][0][1].shape[1] for b in range(len(seq))}) > 2
    model = build_decoder(DecoderConfig("merge", len(vocab), 6, 16, embed_dim=8, units=8), sequences=True)
    model.compile("adam", caption_loss())
    history = model.fit(seq, epochs=2, verbose=0)  # TF: a fixed-length signature would refuse a batch
    assert np.isfinite(history.history["loss"]).all()


def cfg(kind, rnn="lstm", **kw):
    return DecoderConfig(kind, vocab_size=12, feature_dim=6, max_length=8, embed_dim=8, units=8, dropout=0.1,
                         rnn=rnn, **kw)


@pytest.mark.parametrize("kind,rnn", [("merge", "lstm"), ("inject", "lstm"), ("init-inject", "lstm"),
                                      ("pre-inject", "lstm"), ("merge", "gru"), ("init-inject", "gru")])
def test_decoder_trains_saves_and_reloads_in_safe_mode(tmp_path, kind, rnn):
    keras.utils.set_random_seed(0)
    model = build_decoder(cfg(kind, rnn))
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(16, 6)).astype("float32"), rng.integers(1, 12, size=(16, 7)).astype("int32")]
    y = rng.integers(1, 12, size=16)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["merge", "inject", "init-inject", "pre-inject"])
@pytest.mark.parametrize("tied", [False, True])
def test_fast_path_loss_equals_pairs_loss(tmp_path, kind, tied):
    c = cfg(kind, tie_embeddings=tied)
    keras.utils.set_random_seed(1)
    seq_model, pair_model = build_decoder(c, sequences=True), build_decoder(c, sequences=False)
    pair_model.set_weights(seq_model.get_weights())
    seq_model.compile(loss=caption_loss())
    pair_model.compile(loss="sparse_categorical_crossentropy")
    vocab, enc = encoded(("a", "dog", "runs", "cat", "w5", "w6", "w7", "w8"))
    store = tiny_store(tmp_path)
    (f1, inputs), targets, weights = CaptionSequence(enc, store, 4, shuffle=False, output_offset=c.decoder.output_offset)[0]
    (f2, prefixes), next_words = PairSequence(enc, store, 4, shuffle=False, fixed_length=c.max_length - 1)[0]
    fast = seq_model.evaluate([f1, inputs], targets, sample_weight=weights, verbose=0)
    pairs = pair_model.evaluate([f2, prefixes], next_words, verbose=0, batch_size=len(next_words))
    assert fast == pytest.approx(pairs, rel=1e-5)


def test_bad_configurations():
    with pytest.raises(CaptioningError, match="unknown decoder"):
        cfg("lstm")
    with pytest.raises(CaptioningError, match="inject decoder only"):
        cfg("merge", bidirectional=True)
    with pytest.raises(CaptioningError, match="train it with pairs"):
        build_decoder(cfg("inject", bidirectional=True), sequences=True)
    assert build_decoder(cfg("inject", bidirectional=True)).get_layer("birnn")
    assert build_decoder(cfg("inject"), sequences=True).get_layer("rnn").return_sequences
    with pytest.raises(CaptioningError, match="--tie-embeddings applies to merge, inject, init-inject, pre-inject, transformer"):
        cfg("attention", grid_size=4, tie_embeddings=True)


def test_fit_learns_far_below_unigram_and_writes_the_run(learnable):
    result, run = learnable["fit"], learnable["run"]
    assert result.best_val_loss < 0.5 * result.unigram_val_loss
    for name in ("model.keras", "vocab.json", "config.json", "history.csv", "training_curves.png",
                 "checkpoints/best.keras", "checkpoints/last.keras"):
        assert (run / name).is_file(), name
    config = load_config(run)
    assert config["features"]["backbone"] == "efficientnet_b0" and config["decoder"]["type"] == "merge"
    assert config["training"]["fast_path"] and config["cleaning"]["lowercase"]
    history = pd.read_csv(run / "history.csv")
    assert {"loss", "val_loss", "val_top5", "learning_rate"} <= set(history.columns)


def test_fit_refuses_bad_inputs(learnable, tmp_path):
    data, features = learnable["data"], learnable["features"]
    with pytest.raises(CaptioningError, match="not empty.*--resume"):
        fit(data, features, learnable["run"], FitOptions(epochs=1))
    partial = tiny_store(tmp_path)  # knows none of the sample's images
    with pytest.raises(CaptioningError, match="have no features"):
        fit(data, partial.path, tmp_path / "r1", FitOptions(epochs=1, on_missing="error"))
    with pytest.raises(CaptioningError, match="split is empty"):
        fit(data, partial.path, tmp_path / "r2", FitOptions(epochs=1))
    w = FeatureStoreWriter(tmp_path / "sp.h5", {"backbone": "x", "weights": "none", "pooling": "spatial",
                                                "input_size": 8, "feature_shape": [4, 3], "dtype": "float32"})
    w.write_batch(["sample_00000.jpg"], np.zeros((1, 4, 3)))
    with pytest.raises(CaptioningError, match="spatial features"):
        fit(data, w.finalize(True).path, tmp_path / "r3", FitOptions(epochs=1))


_CHILD = """
import sys
from captioning.training import FitOptions, fit
fit(sys.argv[1], sys.argv[2], sys.argv[3], FitOptions(epochs=60, batch_size=8, units=32, embed_dim=16,
    patience=100), verbose=0)
"""


def test_resume_after_killed_fit(learnable, tmp_path):
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(learnable["data"]), str(learnable["features"]),
                              str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "checkpoints" / "state.json"
    deadline = time.time() + 180
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text() or "{}").get("epochs_done", 0) >= 2:
            break
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = json.loads(state.read_text())["epochs_done"]
    assert 2 <= done < 60 and not (run / "model.keras").exists()
    lr_before = float(keras.models.load_model(run / "checkpoints" / "last.keras").optimizer.learning_rate)
    result = fit(learnable["data"], learnable["features"], run,
                 FitOptions(epochs=done + 2), resume=True, verbose=0)  # settings come from the run
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(done + 2))
    assert result.epochs_run == done + 2 and (run / "model.keras").is_file()
    assert load_config(run)["training"]["units"] == 32
    assert float(history["learning_rate"].iloc[done]) <= lr_before + 1e-12


def test_a_run_from_before_tied_embeddings_resumes_untied(learnable, tmp_path):
    """Tying is the default since 0.7; a run whose config predates the option was untied and must stay so."""
    run = tmp_path / "old"
    small = dict(batch_size=16, units=16, embed_dim=8, min_count=1, self_critical_epochs=0)
    fit(learnable["data"], learnable["features"], run, FitOptions(epochs=1, tie_embeddings=False, **small), verbose=0)
    config = json.loads((run / "config.json").read_text())
    del config["training"]["tie_embeddings"], config["decoder"]["tie_embeddings"]
    (run / "config.json").write_text(json.dumps(config))
    fit(learnable["data"], learnable["features"], run, FitOptions(epochs=2), resume=True, verbose=0)
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1]
    assert type(keras.models.load_model(run / "model.keras").get_layer("embedding")) is keras.layers.Embedding
    assert load_config(run)["decoder"]["tie_embeddings"] is False
    new = tmp_path / "new"
    fit(learnable["data"], learnable["features"], new, FitOptions(decoder="init-inject", epochs=1, **small), verbose=0)
    assert load_config(new)["decoder"]["tie_embeddings"] is True  # init-inject's default; merge's is untied
    assert "output" not in [w.path.split("/")[0] for w in keras.models.load_model(new / "model.keras").weights
                            if w.path.endswith("kernel")]


def test_figures_leave_a_notebooks_plotting_backend_alone(tmp_path):
    """Writing training curves or a caption grid must not switch pyplot's backend (it broke inline plots)."""
    import matplotlib
    from captioning.figures import caption_grid
    from captioning.training.curves import plot_history
    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plot_history([{"epoch": 0, "loss": 2.0, "val_loss": 2.5, "learning_rate": 1e-3},
                      {"epoch": 1, "loss": 1.5, "val_loss": 2.2, "learning_rate": 1e-3}], tmp_path / "c.png")
        caption_grid([(tmp_path / "missing.jpg", "a dog", ["a dog runs"])], tmp_path / "g.png")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "g.png").stat().st_size > 1000
    finally:
        matplotlib.use(previous)


def test_label_smoothing_loss_is_the_mixture_of_the_word_and_the_uniform_cross_entropy():
    from captioning.decoders.layers import SmoothedCrossEntropy
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=(2, 3)).astype("float32")
    words = np.array([[1, 4, 0], [6, 2, 3]])
    weights = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # the first caption's last step is padding
    nll = -np.log(np.take_along_axis(probs, words[..., None], -1)[..., 0])
    uniform = -np.log(probs).mean(-1)
    for eps in (0.0, 0.1, 0.3):
        expected = (((1 - eps) * nll + eps * uniform) * weights).sum() / weights.sum()
        got = float(SmoothedCrossEntropy(eps)(words, probs, sample_weight=weights))
        assert got == pytest.approx(expected, rel=1e-5)
    plain = float(caption_loss()(words, probs, sample_weight=weights))
    assert float(SmoothedCrossEntropy(0.0)(words, probs, sample_weight=weights)) == pytest.approx(plain, rel=1e-5)


def test_a_smoothed_fit_reports_the_plain_cross_entropy_and_resumes(learnable, tmp_path):
    """With --label-smoothing the loss is another number: history.csv logs the captions' own
    cross-entropy beside it, and the run reports that; the checkpoint, compiled with the smoothed
    loss, resumes in a fresh process."""
    run = tmp_path / "run"
    options = ["--captions", str(learnable["data"]), "--features", str(learnable["features"]), "--out", str(run),
               "--units", "16", "--embed-dim", "8", "--min-count", "1", "--self-critical-epochs", "0",
               "--matcher-epochs", "0", "--label-smoothing", "0.2"]
    cli = [sys.executable, "-m", "captioning", "fit"]
    assert subprocess.run(cli + options + ["--epochs", "1"], capture_output=True).returncode == 0
    resumed = subprocess.run(cli + options[:6] + ["--resume", "--epochs", "2"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert (history["val_loss"] > history["val_cross_entropy"]).all()  # the smoothed term weighs the whole vocabulary
    config = load_config(run)
    assert config["training"]["label_smoothing"] == 0.2
    assert config["results"]["best_val_loss"] == pytest.approx(history["val_cross_entropy"].min())


def test_warmup_ramps_the_rate_per_batch_and_follows_a_plateau_halving():
    """LinearWarmup sets target·(step+1)/N before each of the first N batches, then leaves the rate
    alone; a halving by another callback mid-ramp halves the rest of the ramp too."""
    from captioning.training.warmup import LinearWarmup
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    class HalveAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.model.optimizer.learning_rate = float(
                    keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)) / 2

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, batch_size=2, epochs=3, verbose=0, shuffle=False,
              callbacks=[HalveAfterFirstEpoch(), LinearWarmup(6, 0.01, steps_per_epoch=4), Record()])
    expected = [0.01 * (s + 1) / 6 for s in range(4)] + [0.005 * (s + 1) / 6 for s in range(4, 6)] + [0.005] * 6
    assert seen == pytest.approx(expected, rel=1e-5)


def test_a_warmed_up_fit_resumes_on_the_ramp(learnable, tmp_path):
    """--warmup-steps spanning two epochs: history.csv shows each epoch's starting rate on the ramp,
    and a run killed after epoch 1 and resumed in a fresh process trains exactly as one that was not."""
    options = ["--captions", str(learnable["data"]), "--features", str(learnable["features"]),
               "--units", "16", "--embed-dim", "8", "--min-count", "1", "--self-critical-epochs", "0",
               "--matcher-epochs", "0", "--learning-rate", "0.01", "--warmup-steps", "12"]
    cli = [sys.executable, "-m", "captioning", "fit"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert subprocess.run(cli + options + ["--out", str(whole), "--epochs", "3"], capture_output=True).returncode == 0
    assert subprocess.run(cli + options + ["--out", str(split), "--epochs", "1"], capture_output=True).returncode == 0
    resumed = subprocess.run(cli + options[:4] + ["--out", str(split), "--resume", "--epochs", "3"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    history, again = pd.read_csv(whole / "history.csv"), pd.read_csv(split / "history.csv")
    batches = int(np.ceil(load_config(whole)["data"]["train_images"] / 16))
    assert batches < 12 < 2 * batches  # the ramp ends inside the second epoch
    assert history["learning_rate"].tolist() == pytest.approx([0.01 / 12, 0.01 * (batches + 1) / 12, 0.01], rel=1e-5)
    assert again["learning_rate"].tolist() == pytest.approx(history["learning_rate"].tolist(), rel=1e-6)
    assert again["val_loss"].tolist() == pytest.approx(history["val_loss"].tolist(), rel=1e-5)
    assert load_config(split)["training"]["warmup_steps"] == 12
