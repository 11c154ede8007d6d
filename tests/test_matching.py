"""The image–caption matcher: trained contrastively by fit, consulted by re-ranking."""

import shutil

import numpy as np
import pytest

from captioning.cli import EXIT_ERROR, EXIT_USAGE, main
from captioning.data import Vocabulary
from captioning.inference import matching
from captioning.training.matching import train_matcher

VOCAB = Vocabulary(["a", "red", "ball", "dog", "runs", "on", "grass", "brown", "blue", "cat"])


def _ids(text):
    return VOCAB.encode(text.split(), markers=False)


def _two_kinds(n=40, seed=0):
    """Half the photos show balls, half dogs; each kind has its own captions."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 16)).astype(np.float32)
    features[: n // 2, :3] += 3.0
    captions = [[_ids("a red ball on grass"), _ids("a ball")] if i < n // 2 else
                [_ids("a brown dog runs"), _ids("a dog runs on grass")] for i in range(n)]
    return features, captions


def test_the_matcher_learns_which_caption_fits_which_photo(tmp_path):
    features, captions = _two_kinds()
    train_matcher(features, captions, len(VOCAB), 8, tmp_path / matching.FILE, epochs=40)
    matcher = matching.Matcher.load(tmp_path / matching.FILE, VOCAB, 16)  # safe mode: stock layers only
    test, _ = _two_kinds(seed=1)
    candidates = [[_ids("a red ball") + [VOCAB.end_id, 5], _ids("a dog runs")]] * 2  # after the end: ignored
    ball, dog = matcher.scores(test[[0, -1]], candidates)
    assert ball[0] > ball[1] and dog[1] > dog[0]
    assert np.all(np.abs(ball) <= 1 + 1e-5)  # cosines
    grid = np.repeat(test[[0, -1]][:, None, :], 4, axis=1)  # an attention run's 2×2 grids: averaged first
    np.testing.assert_allclose(np.concatenate(matcher.scores(grid, candidates)), np.concatenate([ball, dog]),
                               rtol=1e-5, atol=1e-6)


def test_fit_writes_a_matcher_and_beam_search_consults_it(learnable, evaluate_dev):
    assert (learnable["run"] / matching.FILE).is_file()
    with_match, alone = evaluate_dev(learnable["run"], "m"), evaluate_dev(learnable["run"], "c", "--matching", "0")
    assert with_match["settings"]["matching"] == 1.0 and "matching" not in alone["settings"]
    assert with_match["settings"]["retrieved"] == 100 and "retrieved" not in alone["settings"]
    assert with_match["settings"]["likelihood"] == alone["settings"]["likelihood"] == 0.02
    assert with_match["metrics"]["BLEU-4"] > with_match["constant_caption_baseline"]["BLEU-4"]


def test_resume_adds_the_matcher_to_an_older_run(learnable, run_without, capsys):
    """(That such a run still captions, with a note, is tests/test_consensus.py's.)"""
    old = run_without(matching.FILE)
    image = str(learnable["data"] / "Images" / "sample_00000.jpg")
    assert main(["fit", "--captions", str(learnable["data"]), "--features", str(learnable["features"]),
                 "--out", str(old), "--resume"]) == 0
    assert (old / matching.FILE).is_file()
    capsys.readouterr()
    assert main(["caption", image, "--run", str(old), "--beam", "3"]) == 0
    assert "matcher" not in capsys.readouterr().err


def test_a_damaged_matcher_is_a_clear_error(learnable, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(learnable["run"], run)
    (run / matching.FILE).write_bytes(b"not a zip")
    image = str(learnable["data"] / "Images" / "sample_00000.jpg")
    assert main(["caption", image, "--run", str(run), "--beam", "3"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "matcher.keras" in err and "--matching 0" in err and "Traceback" not in err
    assert main(["caption", image, "--run", str(run), "--beam", "3", "--matching", "0"]) == 0


@pytest.mark.parametrize("args, says", [(["--greedy", "--matching", "2"], "--beam"),
                                        (["--beam", "3", "--rerank", "0", "--matching", "2"], "--rerank"),
                                        (["--beam", "1", "--candidates", "both"], "--beam"),
                                        (["--sample", "--likelihood", "0.1"], "--beam"),
                                        (["--no-rerank", "--likelihood", "0.1"], "--no-rerank"),
                                        (["--beam", "3", "--rerank", "0", "--likelihood", "0.1"], "--rerank"),
                                        (["--beam", "3", "--rerank", "0", "--candidates", "model"], "--rerank")])
def test_reranking_options_without_reranking_are_refused(learnable, args, says, capsys):
    image = str(learnable["data"] / "Images" / "sample_00000.jpg")
    assert main(["caption", image, "--run", str(learnable["run"]), *args]) == EXIT_USAGE
    assert says in capsys.readouterr().err


def test_matcher_epochs_0_trains_none_and_captioning_says_why(base, capsys, tmp_path):
    from hostile import cli
    run = tmp_path / "run"
    code, out, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                         "--epochs", "1", "--batch-size", "8", "--units", "8", "--embed-dim", "8",
                         "--self-critical-epochs", "0", "--matcher-epochs", "0")
    assert code == 0 and not (run / matching.FILE).exists() and "matcher.keras" not in out, err
    image = next((base["data"] / "Images").glob("*.jpg"))
    code, out, err = cli(capsys, "caption", image, "--run", run)
    assert code == 0 and out.strip() and "has no matcher.keras (fit --matcher-epochs 0)" in err
