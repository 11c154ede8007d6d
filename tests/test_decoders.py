"""Every decoder: registry, step = teacher forcing, safe-mode reload and resume in fresh processes."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from captioning import decoders
from captioning.backend import import_keras
from captioning.decoders import DecoderConfig
from captioning.errors import UsageError

keras = import_keras()
ALL = decoders.names()


def test_registry_is_the_only_list_and_the_cli_uses_it(capsys):
    assert ALL == ("merge", "inject", "init-inject", "pre-inject", "attention", "transformer")
    assert all(decoders.get(n).name == n for n in ALL)
    with pytest.raises(UsageError, match="unknown decoder 'lstm'; choose one of merge, inject"):
        decoders.get("lstm")
    from captioning.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    help_text = capsys.readouterr().out
    assert all(n in help_text for n in ALL)


def _cfg(kind, **kw):
    sizes = dict(vocab_size=12, feature_dim=5, max_length=7, embed_dim=8 if kind == "transformer" else 6, units=8,
                 grid_size=4 if decoders.get(kind).needs_spatial else 0, heads=2)
    return DecoderConfig(kind, **{**sizes, **kw})


TIEABLE = [k for k in ALL if decoders.get(k).can_tie]


@pytest.mark.parametrize("kind,rnn,tied,grid", [(k, "lstm", False, None) for k in ALL] + [("inject", "gru", False, None)]
                         + [(k, "lstm", True, None) for k in TIEABLE] + [("transformer", "lstm", False, 4)])
def test_one_step_model_equals_teacher_forcing(kind, rnn, tied, grid):
    """Each decoder's inference graph, fed its own tokens, gives the teacher-forced model's outputs
    (the transformer's: its key/value cache, on a pooled vector and on a grid)."""
    keras.utils.set_random_seed(4)
    cfg = _cfg(kind, rnn=rnn, tie_embeddings=tied, **({"grid_size": grid} if grid else {}))
    seq_model = decoders.build(cfg, sequences=True)
    steps_model = decoders.build(cfg)
    steps_model.set_weights(seq_model.get_weights())
    steps = decoders.step_model(steps_model, cfg)
    rng = np.random.default_rng(1)
    shape = (3, 4, 5) if cfg.grid_size else (3, 5)
    feats = rng.normal(size=shape).astype("float32")
    caption = rng.integers(4, 12, size=(3, 5)).astype("int32")
    caption[:, 0] = 2  # startseq
    forced = np.asarray(seq_model.predict_on_batch([feats, caption]))
    offset = decoders.get(kind).output_offset
    state = steps.start(feats)
    for t in range(caption.shape[1]):
        log_probs, state = steps.step(caption[:, t], state)
        np.testing.assert_allclose(np.exp(log_probs), forced[:, t + offset], atol=1e-5 if kind == "transformer" else 2e-5)


def test_option_ranges_are_usage_errors():
    for bad, match in [(dict(units=0), "--units"), (dict(dropout=1.0), "--dropout"),
                       (dict(embed_dim=-1), "--embed-dim"), (dict(bidirectional=True), "inject decoder only")]:
        with pytest.raises(UsageError, match=match):
            _cfg("merge", **bad)


_TRAIN = """
import sys
from captioning.training import FitOptions, fit
data, pooled, spatial, root = sys.argv[1:5]
for kind in sys.argv[5].split(","):
    features = spatial if kind == "attention" else pooled
    for name, epochs in (("straight", 3), ("resumed", 2)):
        fit(data, features, f"{root}/{kind}-{name}", FitOptions(decoder=kind, epochs=epochs, batch_size=8, units=8,
            embed_dim=8, attention_dim=8, dropout=0.3, patience=10, seed=5, self_critical_epochs=0, matcher_epochs=0),
            verbose=0)
"""
_RESUME = """
import sys
from captioning.training import FitOptions, fit
data, pooled, spatial, root = sys.argv[1:5]
for kind in sys.argv[5].split(","):
    features = spatial if kind == "attention" else pooled
    fit(data, features, f"{root}/{kind}-resumed", FitOptions(epochs=3), resume=True, verbose=0)
"""
_RELOAD = """
import json, sys
import numpy as np
if sys.argv.pop(1) == "keras-first":
    import keras, captioning  # Keras already loaded: captioning registers its layers at once
else:
    import captioning, keras  # captioning loads no Keras: its layers are registered when Keras arrives
out = {}
for path in sys.argv[1:]:
    model = keras.saving.load_model(path, safe_mode=True)
    out[path] = [float(np.sum(np.abs(w))) for w in model.get_weights()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def resumed_runs(sample_dir, tmp_path_factory):
    """Per decoder: a 3-epoch run, and a 2-epoch run resumed to 3 epochs in a fresh process."""
    from captioning.features import extract_features
    root = tmp_path_factory.mktemp("resume")
    pooled = extract_features(sample_dir / "Images", backbone="efficientnet_b0", weights="none",
                              out=root / "pooled.h5", show_progress=False).store.path
    spatial = extract_features(sample_dir / "Images", backbone="efficientnet_b0", weights="none", pooling="spatial",
                               dtype="float16", out=root / "spatial.h5", show_progress=False).store.path
    args = [str(sample_dir), str(pooled), str(spatial), str(root), ",".join(ALL)]
    for script in (_TRAIN, _RESUME):
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.mark.parametrize("kind", ALL)
def test_resumed_run_equals_uninterrupted_run(resumed_runs, kind):
    straight, resumed = resumed_runs / f"{kind}-straight", resumed_runs / f"{kind}-resumed"
    h1, h2 = pd.read_csv(straight / "history.csv"), pd.read_csv(resumed / "history.csv")
    assert h1["epoch"].tolist() == h2["epoch"].tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(h1, h2, rtol=1e-4)
    w1 = keras.saving.load_model(straight / "model.keras").get_weights()
    w2 = keras.saving.load_model(resumed / "model.keras").get_weights()
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("order", ["captioning-first", "keras-first"])
def test_plain_import_reloads_every_decoder_in_safe_mode(resumed_runs, order):
    paths = [str(resumed_runs / f"{k}-straight" / f) for k in ALL for f in ("model.keras", "checkpoints/last.keras")]
    done = subprocess.run([sys.executable, "-c", _RELOAD, order, *paths], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    sums = json.loads(done.stdout.strip().splitlines()[-1])
    for p in paths[::2]:
        expected = [float(np.sum(np.abs(w))) for w in keras.saving.load_model(p).get_weights()]
        assert sums[p] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["merge", "pre-inject"])
def test_compiled_top_k_step_equals_selecting_from_the_full_step(kind):
    keras.utils.set_random_seed(2)
    cfg = _cfg(kind, vocab_size=300)
    steps = decoders.step_model(decoders.build(cfg), cfg)
    feats = np.random.default_rng(3).normal(size=(4, 5)).astype("float32")
    tokens = np.array([2, 7, 9, 2], np.int32)
    full, _ = steps.step(tokens, steps.start(feats))
    values, ids, state = steps.step_topk(tokens, steps.start(feats), 6)
    expected = np.argsort(-full, axis=-1, kind="stable")[:, :6]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(values, np.take_along_axis(full, expected, -1), rtol=1e-6)
    assert len(state) == len(steps.start(feats))


def test_inference_never_imports_training():
    code = ("import sys, captioning.inference, captioning.evaluation, captioning.run\n"
            "bad = sorted(m for m in sys.modules if m.startswith('captioning.training'))\n"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_inject_runs_saved_before_the_masked_repeat_still_re_read_their_prefix():
    """Inject models from before 0.3 repeat the image without a mask, so padding reaches their final RNN:
    stepping with state would not reproduce them; re-reading the padded prefix does."""
    from captioning.decoders.inject import InjectSteps
    from captioning.decoders.steps import PrefixSteps
    cfg = _cfg("inject")
    assert isinstance(decoders.step_model(decoders.build(cfg), cfg), InjectSteps)
    L = keras.layers
    image, caption = keras.Input((5,), name="image"), keras.Input((6,), dtype="int32", name="caption")
    words = L.LSTM(8, return_sequences=True, name="caption_rnn")(L.Embedding(12, 6, mask_zero=True)(caption))
    img = L.RepeatVector(6, name="image_repeat")(L.Dense(6, name="image_dense")(image))
    hidden = L.LSTM(8, name="rnn")(L.Concatenate()([img, words]))
    old = keras.Model([image, caption], L.Dense(12, activation="softmax", name="output")(hidden))
    steps = decoders.step_model(old, cfg)
    assert isinstance(steps, PrefixSteps)
    feats = np.random.default_rng(0).normal(size=(2, 5)).astype("float32")
    log_p, _ = steps.step(np.array([2, 2], np.int32), steps.start(feats))
    prefix = np.zeros((2, 6), np.int32)
    prefix[:, 0] = 2
    np.testing.assert_allclose(np.exp(log_p), old.predict_on_batch([feats, prefix]), atol=1e-6)


@pytest.mark.parametrize("kind,rnn", [("init-inject", "lstm"), ("inject", "gru"), ("merge", "lstm")])
def test_a_first_caption_raises_no_warning_about_masks(kind, rnn):
    """A notebook's first caption used to print Keras' 'lstm_cell was passed an input with a mask'
    warning: the one-token step has no padding, so no mask reaches the cell."""
    import warnings
    cfg = _cfg(kind, rnn=rnn)
    steps = decoders.step_model(decoders.build(cfg), cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps.step_topk(np.full(2, 2, np.int32), steps.start(np.zeros((2, 5), np.float32)), 3)
    assert not [w for w in caught if "mask" in str(w.message)]
