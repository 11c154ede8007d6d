"""Resume after kill -9 at random moments, in a new process, and everything resume refuses."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from captioning.features import FeatureStore, extract_features
from captioning.training import FitOptions, fit

from hostile import cli, cli_process, digest, keras, extract_args, SLOW_FIT


@pytest.fixture(scope="module")
def uninterrupted(base, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    done = subprocess.run([sys.executable, "-c", SLOW_FIT, str(base["data"]), str(base["store"]), str(run), "5"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_at_a_random_moment_then_resume_equals_the_uninterrupted_run(base, uninterrupted, tmp_path, seed):
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", SLOW_FIT, str(base["data"]), str(base["store"]), str(run), "5"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "state.json").exists():
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 3.0))  # anywhere: mid-epoch, mid-checkpoint, mid-export
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = cli_process("fit", "--captions", base["data"], "--features", base["store"], "--out", run, "--resume",
                       "--epochs", "5")
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv"), pd.read_csv(uninterrupted / "history.csv"),
                                  rtol=1e-4)
    for a, b in zip(keras.saving.load_model(run / "model.keras").get_weights(),
                    keras.saving.load_model(uninterrupted / "model.keras").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not list(run.rglob(".*tmp*")), "temporary files left behind"


def test_resume_after_early_stopping_trains_no_further_epoch(base, capsys, tmp_path):
    run = tmp_path / "run"
    fit(base["data"], base["store"], run, FitOptions(epochs=60, batch_size=8, units=16, embed_dim=8, patience=1,
                                                     learning_rate=0.05), verbose=0)
    assert json.loads((run / "checkpoints" / "state.json").read_text())["stopped"]
    history = pd.read_csv(run / "history.csv")
    (run / "model.keras").unlink()  # as if killed while exporting
    code, _, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run, "--resume",
                     "--epochs", "60")
    assert code == 0 and (run / "model.keras").is_file()
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv"), history)


def test_resume_with_nothing_to_resume_explains(base, capsys, tmp_path):
    (tmp_path / "run").mkdir()
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out",
                       tmp_path / "run", "--resume")
    assert code == 1 and "nothing to resume" in err


def test_resume_refuses_a_changed_setting_instead_of_ignoring_it(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    before = digest(run)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--units", "16", "--learning-rate", "0.01")
    assert code == 2 and "--units 16 (this run: 8)" in err and "--learning-rate 0.01 (this run: 0.001)" in err
    assert digest(run) == before
    # the run's own values, or only --epochs, resume as before
    code, out, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--units", "8", "--epochs", "3", "--self-critical-epochs", "1")
    assert code == 0 and "Trained 3 epochs" in out


def test_resume_refuses_a_typed_setting_even_when_it_is_the_default(base, capsys, tmp_path):
    from hostile import TINY
    run = tmp_path / "run"
    assert cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run, *TINY)[0] == 0
    before = digest(run)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--self-critical-epochs", "1")  # 1 is fit's default; this run's is 0
    assert code == 2 and "--self-critical-epochs 1 (this run: 0)" in err
    assert digest(run) == before


def test_resume_refuses_edited_captions_and_accepts_the_same_ones_rewritten(base, capsys, tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(base["run"], run)
    shutil.copytree(base["data"], data, ignore=shutil.ignore_patterns("Images"))
    (data / "Images").symlink_to(base["data"] / "Images")
    token = data / "Flickr8k.token.txt"
    lines = token.read_text().splitlines()
    token.write_text("\r\n".join(reversed(lines)))  # the same captions: other order, other line endings
    code, out, _ = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    assert code == 0 and "Trained 3 epochs" in out
    before = digest(run)
    token.write_text("\n".join(lines).replace(" red ", " crimson "))
    code, _, err = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "4")
    assert code == 1 and "captions differ from those run" in err and "Nothing was changed" in err
    assert digest(run) == before


def test_resume_on_a_store_that_now_holds_more_images_is_refused_naming_both_counts(base, capsys, tmp_path):
    part = tmp_path / "part"
    part.mkdir()
    for i, image in enumerate(sorted((base["data"] / "Images").iterdir())):
        if i % 3:
            (part / image.name).symlink_to(image)
    store = extract_features(part, backbone="efficientnet_b0", weights="none", out=tmp_path / "f.h5",
                             show_progress=False).store.path
    run = tmp_path / "run"
    fit(base["data"], store, run, FitOptions(epochs=1, batch_size=8, units=8, embed_dim=8, self_critical_epochs=0),
        verbose=0)
    extract_features(base["data"] / "Images", backbone="efficientnet_b0", weights="none", out=store,
                     show_progress=False)  # the rest of the images join the store
    before = digest(run)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", store, "--out", run, "--resume",
                       "--epochs", "2")
    trained = json.loads((run / "config.json").read_text())["data"]["train_images"]
    assert code == 1 and f"{trained} images then" in err and "store holds other" in err
    assert digest(run) == before


def test_resume_from_a_damaged_checkpoint_says_to_start_again(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    (run / "checkpoints" / "last.keras").write_text("junk")
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    assert code == 1 and "last.keras is not a .keras model file" in err and "start the run again" in err


def test_a_half_written_checkpoint_from_a_kill_is_ignored(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    (run / "checkpoints" / ".last.tmp-99999.keras").write_bytes(b"PK\x03\x04 half")  # a kill during the write
    code, out, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    assert code == 0 and pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]
    assert not (run / "checkpoints" / ".last.tmp-99999.keras").exists()  # the resumed run removed it


def test_damaged_history_tables_are_rewritten_from_the_state_on_resume(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    tables = {name: (run / name).read_text() for name in ("history.csv", "self_critical.csv")}
    (run / "model.keras").unlink()  # as if killed while exporting
    (run / "history.csv").write_text("epoch,val_loss\n0,0.0\n")  # hand-edited: epoch 0 looks perfect
    (run / "self_critical.csv").write_text("garbage,\n")
    code, out, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run, "--resume")
    assert code == 0 and (run / "model.keras").is_file() and "Trained 2 epochs" in out  # its own --epochs, not 20
    assert {name: (run / name).read_text() for name in tables} == tables
    # more epochs: which epoch is best is judged against the recorded losses, not the edited file's
    (run / "history.csv").write_text("epoch,val_loss\n0,0.0\n")
    code, out, _ = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    history = pd.read_csv(run / "history.csv")
    assert code == 0 and "Trained 3 epochs" in out and history["epoch"].tolist() == [0, 1, 2]
    assert history.iloc[:2].to_csv(index=False) == tables["history.csv"]
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["early_stopping"]["best"] == history["val_loss"].min()


def test_resume_with_fewer_epochs_than_done_trains_none_and_says_so(base, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    history = (run / "history.csv").read_text()
    code, out, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                         "--resume", "--epochs", "1")
    assert code == 0 and "--epochs 1 is fewer than the 2 epochs" in out + err
    assert (run / "history.csv").read_text() == history
    assert json.loads((run / "config.json").read_text())["training"]["epochs"] == 2


@pytest.mark.parametrize("table,says", [("epoch,val_loss\n1,2.5\n", "lacks epoch 0 of the 2"),
                                        ("epoch,val_loss\n0,abc\n", "history.csv, line 2: not a table")])
def test_a_run_from_before_recorded_rows_names_a_damaged_history_table(base, capsys, tmp_path, table, says):
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    state = run / "checkpoints" / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items()
                                 if k not in ("history", "self_critical")}))
    (run / "history.csv").write_text(table)
    before = digest(run)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", run,
                       "--resume", "--epochs", "3")
    assert code == 1 and says in err and digest(run) == before


@pytest.mark.slow
def test_extraction_killed_at_random_moments_resumes_to_the_same_store(base, tmp_path):
    out = tmp_path / "f.h5"
    for seed in range(3):
        child = subprocess.Popen([sys.executable, "-m", "captioning", *map(str, extract_args(base, out))],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.Random(seed).uniform(4.0, 9.0))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert cli_process(*extract_args(base, out)).returncode == 0
    store, ref = FeatureStore.open(out), FeatureStore.open(base["store"])
    assert sorted(store.ids) == sorted(ref.ids) and store.attrs["completed"]
    np.testing.assert_allclose(store[ref.ids], ref[ref.ids], rtol=1e-5, atol=1e-6)
