"""Nothing overwritten by surprise, and one writer at a time."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from captioning.features import FeatureStore
from captioning.features.writer import FeatureStoreWriter

from hostile import TINY, cli, cli_process, digest, extract_args, SLOW_FIT


def test_fit_refuses_a_folder_with_someone_elses_files(base, capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("keep me")
    before = digest(out)
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out", out, *TINY)
    assert code == 1 and "not empty" in err and "config.json" in err and digest(out) == before


def test_fit_refuses_a_finished_run_and_points_to_resume(base, capsys):
    before = digest(base["run"])
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out",
                       base["run"], *TINY)
    assert code == 1 and "--resume" in err and digest(base["run"]) == before


def test_two_extractions_at_once_one_refuses_naming_the_other(base, tmp_path):
    out = tmp_path / "f.h5"
    first = subprocess.Popen([sys.executable, "-m", "captioning", *map(str, extract_args(base, out))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "f.h5.lock").exists():
        time.sleep(0.05)
    second = cli_process(*extract_args(base, out))
    _, err1 = first.communicate(timeout=240)
    assert "Traceback" not in err1
    if second.returncode == 1:  # it ran while the first held the lock
        assert "being written by another extract-features" in second.stderr and f"process {first.pid}" in second.stderr
    assert first.returncode == 0
    store = FeatureStore.open(out)
    assert sorted(store.ids) == sorted(FeatureStore.open(base["store"]).ids) and store.attrs["completed"]


def test_a_writer_lock_is_removed_when_done_and_a_killed_writers_is_taken_over(tmp_path):
    from captioning.errors import CaptioningError
    from captioning.lock import WriterLock
    target = tmp_path / "f.h5"
    with WriterLock(target, "extract-features"):
        assert (tmp_path / "f.h5.lock").read_text() == str(os.getpid())
        with pytest.raises(CaptioningError, match=f"another extract-features \\(process {os.getpid()}\\)"):
            WriterLock(target, "extract-features").acquire()
        assert WriterLock(target, "extract-features").holder() == str(os.getpid())
        (tmp_path / "f.h5.partial").mkdir()  # its first batches; the store itself does not exist yet
        with pytest.raises(CaptioningError, match=f"extract-features \\(process {os.getpid()}\\) is writing it now"):
            FeatureStore.open(target)  # fit or evaluate started too early: not "an interrupted extraction"
    assert not (tmp_path / "f.h5.lock").exists()  # no litter beside the user's files
    assert WriterLock(target, "extract-features").holder() is None
    with pytest.raises(CaptioningError, match="An interrupted extraction left batches"):
        FeatureStore.open(target)
    (tmp_path / "f.h5.lock").write_text("99999999")  # left by a writer killed with -9: no lock is held on it
    with WriterLock(target, "extract-features"):
        assert (tmp_path / "f.h5.lock").read_text() == str(os.getpid())
    assert not (tmp_path / "f.h5.lock").exists()


def test_a_merge_killed_before_clean_up_is_completed_by_the_next_run(base, capsys, tmp_path):
    out = tmp_path / "f.h5"
    src = FeatureStore.open(base["store"])
    w = FeatureStoreWriter(out, src.attrs)
    for i in range(0, len(src), 16):
        w.write_batch(src.ids[i:i + 16], src.rows(np.arange(i, min(i + 16, len(src)))))
    segments = tmp_path / "keep"
    shutil.copytree(w.parts, segments)
    w.finalize(True)
    shutil.copytree(segments, w.parts)  # as if killed after the rename, before the segments were removed
    code, out_text, _ = cli(capsys, *extract_args(base, out))
    store = FeatureStore.open(out)
    assert code == 0 and len(store) == len(src) and len(set(store.ids)) == len(store.ids)
    np.testing.assert_array_equal(store[src.ids], src[src.ids])


def test_overwrite_recovers_a_damaged_store(base, capsys, tmp_path):
    out = tmp_path / "f.h5"
    out.write_bytes(b"\x89HDF\r\n garbage")
    code, _, err = cli(capsys, *extract_args(base, out, "--limit", "4"))
    assert code == 1 and "f.h5" in err and "--overwrite" in err
    code, _, _ = cli(capsys, *extract_args(base, out, "--limit", "4", "--overwrite"))
    assert code == 0 and len(FeatureStore.open(out)) == 4


def test_two_fits_on_one_folder_the_second_refuses(base, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-c", SLOW_FIT, str(base["data"]), str(base["store"]), str(run), "4"],
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "state.json").exists():
        time.sleep(0.05)
    second = cli_process("fit", "--captions", base["data"], "--features", base["store"], "--out", run, "--resume",
                         "--epochs", "6")
    first.communicate(timeout=240)
    assert first.returncode == 0
    if second.returncode != 0:
        assert second.returncode == 1 and "being written by another captioning fit" in second.stderr
