"""The transformer decoder as users run it: fitted on a grid (self-critical epoch and re-ranking files
included), captioned by the CLI in a fresh process with its attention figure, and its options'
mistakes said in one line. Step = teacher forcing, resume, safe-mode reload and JAX are covered
for every decoder in tests/test_decoders.py and tests/test_backends.py."""

import subprocess
import sys

import numpy as np
import pytest

from captioning.decoders import DecoderConfig
from captioning.errors import UsageError
from captioning.features import extract_features
from captioning.inference import Captioner
from captioning.training import FitOptions, fit


def test_its_width_and_heads_must_agree():
    base = dict(vocab_size=12, feature_dim=5, max_length=7)
    with pytest.raises(UsageError, match="--embed-dim 6 and --units 8 must be equal"):
        DecoderConfig("transformer", embed_dim=6, units=8, **base)
    with pytest.raises(UsageError, match="--heads 3 must divide --units 8"):
        DecoderConfig("transformer", embed_dim=8, units=8, heads=3, **base)
    assert FitOptions(decoder="transformer").dropout is None  # the decoder's own default: 0.1


def test_it_has_its_own_defaults_and_its_word_vectors_follow_its_width():
    own = FitOptions(decoder="transformer").resolved()
    assert (own.units, own.embed_dim, own.heads, own.dropout, own.learning_rate) == (256, 256, 4, 0.1, 5e-4)
    narrow = FitOptions(decoder="transformer", units=64, heads=2).resolved()
    assert (narrow.units, narrow.embed_dim, narrow.heads) == (64, 64, 2)
    shared = FitOptions(decoder="merge").resolved()
    assert (shared.units, shared.embed_dim, shared.dropout, shared.learning_rate) == (512, 512, 0.5, 1e-3)
    assert FitOptions(decoder="init-inject").resolved().tie_embeddings is True
    attention = FitOptions(decoder="attention").resolved()  # only its rate is its own
    assert (attention.units, attention.dropout, attention.learning_rate) == (512, 0.5, 5e-4)
    assert FitOptions(decoder="attention", learning_rate=1e-3).resolved().learning_rate == 1e-3
    assert FitOptions(decoder="init-inject", tie_embeddings=False, dropout=0.2).resolved().dropout == 0.2


@pytest.fixture(scope="module")
def grid_run(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("transformer")
    store = extract_features(sample_dir / "Images", backbone="efficientnet_b0", weights="none", pooling="spatial",
                             dtype="float16", out=root / "grid.h5", show_progress=False).store
    result = fit(sample_dir, store.path, root / "run", FitOptions(
        decoder="transformer", epochs=6, batch_size=16, units=32, embed_dim=32, heads=4, learning_rate=2e-3,
        self_critical_epochs=1, matcher_epochs=2), verbose=0)
    return root / "run", store, result


def test_it_trains_on_a_grid_and_captions_with_a_map_per_word(grid_run):
    run, store, result = grid_run
    assert len(result.self_critical) == 2 and result.has_matcher  # before and after its self-critical epoch
    cap = Captioner.load(run)
    assert cap.decoder.dropout == 0.1 and cap.decoder.blocks == 2
    assert cap.run.training["dropout"] == 0.1  # config.json records the value trained with, not "unset"
    for c in cap.caption_features(store[store.ids[:3]], "beam"):
        assert c.text and c.attention.shape == (len(c.tokens), 49)
        np.testing.assert_allclose(c.attention.sum(-1), 1.0, atol=1e-4)
    recommended = cap.caption_features(store[store.ids[:3]])  # beam 16, both models' captions, re-ranked
    assert all(c.text for c in recommended)


def test_the_cli_draws_its_attention_figure_in_a_fresh_process(grid_run, sample_dir, tmp_path):
    run, store, _ = grid_run
    image = sample_dir / "Images" / store.ids[0]
    done = subprocess.run([sys.executable, "-m", "captioning", "caption", str(image), "--run", str(run),
                           "--attention-figure", str(tmp_path / "att.png"), "--attention-block", "1"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\t")[0] == str(image) and (tmp_path / "att.png").stat().st_size > 10_000
    done = subprocess.run([sys.executable, "-m", "captioning", "caption", str(image), "--run", str(run),
                           "--attention-figure", str(tmp_path / "att3.png"), "--attention-block", "3"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "decoder blocks 1 to 2" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "att3.png").exists()


def test_each_block_draws_its_own_maps_for_the_same_caption(grid_run):
    run, store, _ = grid_run
    cap = Captioner.load(run)
    last = cap.caption_features(store[store.ids[:4]], "greedy")
    cap.draw_maps_from_block(1)
    first = cap.caption_features(store[store.ids[:4]], "greedy")
    assert [c.text for c in first] == [c.text for c in last]  # the maps are read, not used to choose words
    for a, b in zip(first, last):
        np.testing.assert_allclose(a.attention.sum(-1), 1.0, atol=1e-4)
        assert np.abs(a.attention - b.attention).max() > 1e-3
    cap.draw_maps_from_block(2)
    np.testing.assert_allclose(cap.caption_features(store[store.ids[:1]], "greedy")[0].attention, last[0].attention,
                               atol=1e-6)
    with pytest.raises(UsageError, match="decoder blocks 1 to 2"):
        cap.draw_maps_from_block(0)


def test_a_pooled_transformer_has_no_maps_to_draw(sample_dir, tmp_path):
    store = extract_features(sample_dir / "Images", backbone="efficientnet_b0", weights="none",
                             out=tmp_path / "pooled.h5", show_progress=False).store
    fit(sample_dir, store.path, tmp_path / "run", FitOptions(decoder="transformer", epochs=1, units=8, embed_dim=8,
                                                             self_critical_epochs=0, matcher_epochs=0), verbose=0)
    done = subprocess.run([sys.executable, "-m", "captioning", "caption", str(sample_dir / "Images" / store.ids[0]),
                           "--run", str(tmp_path / "run"), "--attention-figure", str(tmp_path / "att.png")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "transformer on --spatial features" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "att.png").exists()
