"""Ensembles: several runs caption together by averaging their next-word probabilities."""

import json
import shutil

import numpy as np
import pytest

from captioning.cli import main
from captioning.backend import import_keras
from captioning.decoders import DecoderConfig, build as build_decoder, step_model
from captioning.errors import CaptioningError
from captioning.features import FeatureStore
from captioning.inference import BeamSearch, Captioner
from captioning.inference.ensemble import EnsembleSteps
from captioning.training import FitOptions, fit

keras = import_keras()


@pytest.fixture(scope="module")
def runs(learnable, tmp_path_factory):
    """The merge run of ``learnable``, an init-inject run on the same captions, and one whose vocabulary differs."""
    root = tmp_path_factory.mktemp("ensemble")
    small = dict(epochs=4, batch_size=16, units=64, embed_dim=32, dropout=0.3, self_critical_epochs=0)
    fit(learnable["data"], learnable["features"], root / "init", FitOptions(decoder="init-inject", min_count=1,
                                                                             matcher_epochs=0, **small), verbose=0)
    # min count 60 drops the sample's rarest words (each seen 51 or 55 times): another vocabulary
    fit(learnable["data"], learnable["features"], root / "other", FitOptions(decoder="merge", min_count=60,
                                                                              matcher_epochs=0, **small), verbose=0)
    return {"merge": learnable["run"], "init": root / "init", "other": root / "other"}


def test_each_step_is_the_log_of_the_members_mean_probability():
    keras.utils.set_random_seed(5)
    members = [step_model(build_decoder(cfg), cfg) for cfg in
               (DecoderConfig(k, vocab_size=11, feature_dim=5, max_length=7, embed_dim=6, units=8)
                for k in ("merge", "init-inject", "inject"))]
    ensemble = EnsembleSteps(members)
    feats = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    tokens = np.array([2, 2, 2], np.int32)
    states = [m.start(feats) for m in members]
    state = ensemble.start(feats)
    for _ in range(3):
        log_p, state = ensemble.step(tokens, state)
        singles = []
        for i, m in enumerate(members):
            lp, states[i] = m.step(tokens, states[i])
            singles.append(np.exp(lp))
        np.testing.assert_allclose(np.exp(log_p), np.mean(singles, axis=0), rtol=1e-5)
        tokens = np.argmax(log_p[:, 4:], axis=-1).astype(np.int32) + 4
    # beam search gathers the members' state rows like any decoder's
    caps = BeamSearch(3)(ensemble, feats, 2, 3, 7)
    assert len(caps.tokens) == 3


def test_a_run_ensembled_with_itself_captions_like_the_run(runs, learnable):
    with FeatureStore.open(learnable["features"]) as store:
        feats = store[store.ids[:6]]
    single = Captioner.load(runs["merge"]).caption_features(feats, BeamSearch(3))
    twice = Captioner.load([runs["merge"], runs["merge"]]).caption_features(feats, BeamSearch(3))
    assert [c.text for c in twice] == [c.text for c in single]
    np.testing.assert_allclose([c.log_prob for c in twice], [c.log_prob for c in single], atol=1e-4)


def test_cli_evaluates_and_captions_with_an_ensemble(runs, learnable, tmp_path, capsys):
    args = ["--run", str(runs["merge"]), "--run", str(runs["init"])]
    assert main(["evaluate", *args, "--captions", str(learnable["data"]), "--features", str(learnable["features"]),
                 "--split", "dev", "--beam", "3"]) == 0
    record = json.loads((runs["merge"] / "eval-dev-ensemble" / "eval.json").read_text())
    assert record["settings"]["runs"] == [str(runs["merge"]), str(runs["init"])]
    assert record["metrics"]["BLEU-4"] > record["constant_caption_baseline"]["BLEU-4"]
    capsys.readouterr()
    image = learnable["data"] / "Images" / "sample_00000.jpg"
    assert main(["caption", str(image), *args]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\t")


def test_runs_with_different_vocabularies_are_refused(runs, tmp_path, capsys):
    with pytest.raises(CaptioningError, match="different vocabularies"):
        Captioner.load([runs["merge"], runs["other"]])
    code = main(["caption", "x.jpg", "--run", str(runs["merge"]), "--run", str(runs["other"])])
    err = capsys.readouterr().err
    assert code == 1 and "other and" in err and "same --min-count" in err and "Traceback" not in err


def test_vocabularies_are_compared_by_words_not_counts(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs["init"], copy)
    vocab = json.loads((copy / "vocab.json").read_text())
    vocab["counts"] = {word: count + 1 for word, count in (vocab.get("counts") or {}).items()}
    (copy / "vocab.json").write_text(json.dumps(vocab))
    Captioner.load([runs["init"], copy])  # the same words with the same ids: an ensemble
    vocab["tokens"][-2:] = vocab["tokens"][-1:-3:-1]  # two words swap their ids
    (copy / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(CaptioningError, match=r"both \d+ words, but not the same words"):
        Captioner.load([runs["init"], copy])
