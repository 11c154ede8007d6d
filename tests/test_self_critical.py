"""Self-critical fine-tuning on CIDEr-D: the reward is pycocoevalcap's CIDEr, the updates raise it,
equal rewards change nothing, and a run killed between its self-critical epochs resumes to the
same model as an uninterrupted one."""

import dataclasses
import json
import random
import subprocess
import sys

import numpy as np
import pytest

from captioning.metrics.cider import CiderD
from captioning.run import CROSS_ENTROPY_FILE, load_model
from captioning.training import FitOptions, fit
from captioning.training import self_critical as sc_module
from captioning.training.checkpoints import history_rows
from captioning.training.fitting import plan
from captioning.training.self_critical import SelfCritical, best_epoch


def test_cider_d_is_pycocoevalcaps_cider():
    Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider
    rng = random.Random(0)
    words = "a dog cat runs on the grass man woman red blue ball play jumps in water".split()
    refs = {i: [[rng.choice(words) for _ in range(rng.randint(3, 12))] for _ in range(5)] for i in range(40)}
    hyps = {i: [rng.choice(words) for _ in range(rng.randint(1, 12))] for i in range(40)}
    hyps[0] = refs[0][0]  # one exact match
    mean, per_image = Cider().compute_score({i: [" ".join(r) for r in v] for i, v in refs.items()},
                                            {i: [" ".join(h)] for i, h in hyps.items()})
    ours = CiderD(refs).scores(list(hyps), list(hyps.values()))
    np.testing.assert_allclose(ours, per_image, rtol=1e-12, atol=1e-12)
    assert ours.mean() == pytest.approx(mean)


def _session(learnable, tmp_path, **kwargs):
    o = FitOptions(decoder="merge", units=128, embed_dim=64, min_count=1, batch_size=16, dropout=0.3)
    p = plan(learnable["data"], learnable["features"], learnable["run"], o, resume=True)
    sc = SelfCritical(p.run.decoder, p.run.vocab, p.store, p.train, **kwargs)
    sc.load_weights(load_model(learnable["run"] / "checkpoints" / "best.keras").get_weights())
    return p, sc


def test_rewards_are_cider_d_against_each_images_references(learnable, tmp_path):
    """The sparse scorer gives each sample what the dictionary CiderD gives it, unknown words, repeats
    and empty captions included."""
    p, sc = _session(learnable, tmp_path)
    refs = {}
    for image, ids in zip(sc.train.images, sc.train.ids):
        refs.setdefault(image, []).append(tuple(int(i) for i in ids[1:-1]))
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(sc.images), size=6, replace=False)
    words = [list(rng.choice(len(sc.vocab) + 3, size=rng.integers(0, 12))) for _ in range(6 * sc.samples)]
    words[0] = list(refs[sc.images[chosen[0]]][0])  # a reference itself
    words[1] = words[1][:3] * 3  # repeats: clipped counts
    expected = CiderD(refs).scores([sc.images[i] for i in np.repeat(chosen, sc.samples)], words)
    np.testing.assert_allclose(sc.rewards(chosen, words).reshape(-1), expected, rtol=1e-9, atol=1e-12)
    assert expected[0] > 1


def test_updates_raise_the_reward(learnable, tmp_path):
    p, sc = _session(learnable, tmp_path, learning_rate=1e-4, images_per_batch=16)
    rewards = [sc.epoch(e)["reward"] for e in range(4)]
    assert rewards[-1] > rewards[0] + 0.05 and rewards[-1] == max(rewards), rewards
    assert sc.dev_cider(p.dev_references) > 0


def test_equal_rewards_leave_the_weights_alone(learnable, tmp_path, monkeypatch):
    """The baseline is the mean reward of the image's other samples: no sample better than its
    siblings, no gradient."""
    p, sc = _session(learnable, tmp_path)
    before = sc.policy.get_weights()
    monkeypatch.setattr(sc, "rewards", lambda chosen, words: np.full((len(chosen), sc.samples), 0.7))
    sc.update(np.arange(4), seed=[0])
    for a, b in zip(before, sc.policy.get_weights()):
        np.testing.assert_array_equal(a, b)


TINY = dict(decoder="init-inject", epochs=2, batch_size=8, units=16, embed_dim=8, min_count=1, patience=10,
            self_critical_epochs=2)


def test_fit_runs_self_critical_epochs_and_exports_them(learnable, tmp_path, monkeypatch):
    real, scores = SelfCritical.dev_cider, []

    def rising(self, refs):  # the real score, plus 1 more each time: the last epoch is the best on dev
        scores.append(real(self, refs) + len(scores))
        return scores[-1]
    monkeypatch.setattr(sc_module.SelfCritical, "dev_cider", rising)
    result = fit(learnable["data"], learnable["features"], tmp_path / "run", FitOptions(**TINY), verbose=0)
    rows = (tmp_path / "run" / "self_critical.csv").read_text().splitlines()
    assert len(rows) == 4  # header, before, two epochs
    assert [e for e, _ in result.self_critical] == [0, 1, 2]
    assert "self-critical epochs on CIDEr-D" in result.summary()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("self_critical*")) == \
        ["self_critical_2.keras"]
    tuned = load_model(tmp_path / "run" / "checkpoints" / "self_critical_2.keras").get_weights()
    for a, b in zip(tuned, load_model(tmp_path / "run" / "model.keras").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_steps_per_epoch_caps_cross_entropy_and_self_critical_epochs(learnable, tmp_path, monkeypatch):
    from captioning.training.sequences import CaptionSequence
    read, updates = [], []
    real_item, real_update = CaptionSequence.__getitem__, SelfCritical.update
    monkeypatch.setattr(CaptionSequence, "__getitem__",
                        lambda self, i: (read.append(i) if self.shuffle else None, real_item(self, i))[1])
    monkeypatch.setattr(SelfCritical, "update", lambda self, *a, **k: (updates.append(1), real_update(self, *a, **k))[1])
    o = dataclasses.replace(FitOptions(**TINY), epochs=2, self_critical_epochs=1, steps_per_epoch=3, matcher_epochs=0)
    fit(learnable["data"], learnable["features"], tmp_path / "run", o, verbose=0)
    whole = plan(learnable["data"], learnable["features"], tmp_path / "x", FitOptions(**TINY)).sequences()[0]
    assert len(whole) > 3 and -(-len(set(whole.captions.images)) // 32) > 3  # whole epochs are longer
    assert set(read) == {0, 1, 2} and len(updates) == 3  # (Keras reads the first batches again to learn shapes)


def test_bidirectional_inject_skips_it_with_a_note(learnable, tmp_path):
    o = dataclasses.replace(FitOptions(**TINY), decoder="inject", bidirectional=True, epochs=1)
    result = fit(learnable["data"], learnable["features"], tmp_path / "run", o, verbose=0)
    assert any("no self-critical fine-tuning" in n for n in result.notes)
    assert not (tmp_path / "run" / "self_critical.csv").exists()


def test_killed_between_self_critical_epochs_resumes_to_the_same_model(learnable, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    fit(learnable["data"], learnable["features"], straight, FitOptions(**TINY), verbose=0)

    crashed = tmp_path / "crashed"
    original = SelfCritical.epoch

    def dies_in_the_second(self, epoch, progress=None):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch, progress)

    monkeypatch.setattr(sc_module.SelfCritical, "epoch", dies_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        fit(learnable["data"], learnable["features"], crashed, FitOptions(**TINY), verbose=0)
    assert not (crashed / "model.keras").exists()
    done = subprocess.run([sys.executable, "-m", "captioning", "fit", "--captions", learnable["data"], "--features",
                           learnable["features"], "--out", crashed, "--resume", "--epochs", "2"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for a, b in zip(load_model(straight / "model.keras").get_weights(),
                    load_model(crashed / "model.keras").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    rows = [[(r["epoch"], r["reward"], r["dev_cider"]) for r in history_rows(run / "self_critical.csv")]
            for run in (straight, crashed)]
    assert len(rows[0]) == 3
    np.testing.assert_allclose(np.array(rows[1]), np.array(rows[0]), rtol=1e-6)  # NaN: no reward before epoch 1


def test_ctrl_c_during_self_critical_epochs_exits_130_and_the_run_resumes(learnable, tmp_path):
    """A real SIGINT to a fresh `captioning fit`, as Ctrl-C in a terminal sends (a job started with `&`
    by a non-interactive shell ignores SIGINT by design; kill it with SIGTERM, then --resume)."""
    import signal
    run = tmp_path / "run"
    args = [sys.executable, "-m", "captioning", "fit", "--captions", learnable["data"], "--features",
            learnable["features"], "--out", run, "--epochs", "1", "--batch-size", "16", "--units", "16",
            "--embed-dim", "8", "--matcher-epochs", "0"]
    args += ["--self-critical-epochs", "2"]
    child = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    for line in child.stdout:
        if line.startswith("Self-critical fine-tuning"):
            break
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130 and "interrupted; finished work is kept" in err and "Traceback" not in err, \
        (child.returncode, err[-3000:])  # once, under heavy load, it exited 0: the stderr says where the signal went
    assert not (run / "model.keras").exists() and (run / "checkpoints" / "best.keras").is_file()
    done = subprocess.run([*map(str, args), "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and (run / "model.keras").is_file(), done.stderr[-2000:]
    assert len(history_rows(run / "self_critical.csv")) == 1 + 2  # the row before, and the run's own 2 epochs


def test_the_best_epoch_on_dev_wins_a_tie_goes_to_the_later_and_nan_never_wins():
    rows = lambda *dev: [{"epoch": e, "dev_cider": d} for e, d in enumerate(dev)]  # noqa: E731
    assert best_epoch(rows(0.5, 0.6, 0.4)) == 1 and best_epoch(rows(0.5, 0.4, 0.45)) == 0
    assert best_epoch(rows(0.5, 0.6, 0.6)) == 2 and best_epoch(rows(0.5, float("nan"), 0.4)) == 0
    assert best_epoch(rows(float("nan"), float("nan"))) == 1  # no score at all: the last, as before


@pytest.mark.parametrize("dev, kept", [([0.5, 0.6, 0.4], 1), ([0.5, 0.4, 0.45], 0)])
def test_the_epoch_best_on_dev_is_exported(learnable, tmp_path, monkeypatch, dev, kept):
    """Like early stopping for the cross-entropy epochs: a self-critical epoch that lowers dev
    CIDEr-D (on a small train set it can) is not what model.keras holds."""
    scores = iter(dev)
    monkeypatch.setattr(sc_module.SelfCritical, "dev_cider", lambda self, refs: next(scores))
    run = tmp_path / "run"
    result = fit(learnable["data"], learnable["features"], run, FitOptions(**TINY), verbose=0)
    assert result.self_critical_kept == kept
    source = run / "checkpoints" / (f"self_critical_{kept}.keras" if kept else "best.keras")
    for a, b in zip(load_model(source).get_weights(), load_model(run / "model.keras").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in (run / "checkpoints").glob("self_critical*")) == \
        sorted({f"self_critical_{e}.keras" for e in (kept, 2) if e})  # the last stays for --resume
    cross_entropy = run / CROSS_ENTROPY_FILE  # the model before tuning, whose captions re-ranking also weighs
    assert cross_entropy.is_file() == (kept > 0)
    if kept:
        for a, b in zip(load_model(run / "checkpoints" / "best.keras").get_weights(),
                        load_model(cross_entropy).get_weights()):
            np.testing.assert_array_equal(a, b)
    summary = result.summary()
    assert ("cross-entropy model" in summary) == (kept == 0) and (CROSS_ENTROPY_FILE in summary) == (kept > 0)
    assert ("the best on dev" in summary) == (kept == 1)
    assert json.loads((run / "config.json").read_text())["results"]["self_critical_kept_epoch"] == kept


def test_caption_and_evaluate_choose_among_both_models_captions(learnable, tmp_path, monkeypatch, capsys):
    """By default re-ranking pools beam search's captions of model.keras and cross_entropy.keras;
    --candidates model keeps to model.keras's; a run without the file (before 0.5) says how to add it."""
    from captioning.cli import main
    scores = iter([0.5, 0.6])
    monkeypatch.setattr(sc_module.SelfCritical, "dev_cider", lambda self, refs: next(scores))
    run = tmp_path / "run"
    fit(learnable["data"], learnable["features"], run, dataclasses.replace(FitOptions(**TINY), self_critical_epochs=1),
        verbose=0)
    data = ["--captions", str(learnable["data"]), "--features", str(learnable["features"]), "--split", "dev"]
    settings = {}
    for name, extra in (("both", []), ("model", ["--candidates", "model"])):
        assert main(["evaluate", "--run", str(run), *data, "--beam", "3", "--out", str(tmp_path / name), *extra]) == 0
        settings[name] = json.loads((tmp_path / name / "eval.json").read_text())["settings"]
    assert settings["both"]["candidates"] == "both" and "candidates" not in settings["model"]
    image = str(learnable["data"] / "Images" / "sample_00000.jpg")
    capsys.readouterr()
    for wrong in (b"damaged", (learnable["run"] / "model.keras").read_bytes()):  # another run's decoder
        (run / CROSS_ENTROPY_FILE).write_bytes(wrong)
        assert main(["caption", image, "--run", str(run), "--beam", "3"]) == 1
        err = capsys.readouterr().err
        assert CROSS_ENTROPY_FILE in err and "--candidates model" in err and "Traceback" not in err
    (run / CROSS_ENTROPY_FILE).unlink()
    assert main(["caption", image, "--run", str(run), "--beam", "3"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(image) and f"no {CROSS_ENTROPY_FILE}" in err and "--resume" in err
    assert main(["caption", image, "--run", str(run), "--beam", "3", "--candidates", "model"]) == 0
    assert f"no {CROSS_ENTROPY_FILE}" not in capsys.readouterr().err


def test_a_ctrl_c_swallowed_where_it_surfaced_still_stops_the_loop():
    """Python drops a KeyboardInterrupt raised inside a finalizer ("Exception ignored"); the handler the
    CLI installs remembers it, and the loops' checks raise it again at the next batch."""
    import gc
    import signal
    from captioning import interrupt
    previous = interrupt.install()
    try:
        class Finalized:
            def __del__(self):
                signal.raise_signal(signal.SIGINT)  # surfaces here, inside __del__, and is dropped

        Finalized()
        gc.collect()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        interrupt.check()  # raised once: nothing stays pending for the rest of the process
    finally:
        interrupt.uninstall(previous)
