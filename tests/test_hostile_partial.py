"""Captioning a run that is not finished: one `fit` is writing it now (its writer lock is held), or a
killed fit left it half saved (config.json without results). `caption` and `evaluate` refuse with
the reason and the way out, write nothing, and work with --allow-partial, saying so."""

import json
import shutil
import subprocess
import sys
import time

from hostile import cli

HOLD = """
import sys, time
from captioning.lock import WriterLock
with WriterLock(sys.argv[1], "captioning fit"):
    print("held", flush=True)
    time.sleep(120)
"""


def _image(base):
    return next((base["data"] / "Images").glob("*.jpg"))


def test_a_run_being_written_is_refused_then_captioned_with_allow_partial(base, capsys, tmp_path):
    run = shutil.copytree(base["run"], tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = cli(capsys, "caption", _image(base), "--run", run, "--greedy")
        assert code == 1 and f"process {holder.pid}" in err and "--allow-partial" in err and str(run) in err
        code, _, err = cli(capsys, "evaluate", "--run", run, "--captions", base["data"], "--features", base["store"],
                           "--greedy", "--out", tmp_path / "eval")
        assert code == 1 and "is writing it now" in err and not (tmp_path / "eval").exists()
        code, out, err = cli(capsys, "caption", _image(base), "--run", run, "--greedy", "--allow-partial")
        assert code == 0 and out.strip() and "--allow-partial" in err
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    code, _, err = cli(capsys, "caption", _image(base), "--run", run, "--greedy")  # the writer is gone
    assert code == 0, err


def test_a_run_killed_while_saving_is_refused_then_captioned_with_allow_partial(base, capsys, tmp_path):
    run = shutil.copytree(base["run"], tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["results"] = {}  # what a fit killed before its last save leaves
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli(capsys, "caption", _image(base), "--run", run, "--greedy")
    assert code == 1 and "records no results" in err and "--resume" in err and "config.json" in err
    code, _, err = cli(capsys, "evaluate", "--run", run, "--captions", base["data"], "--features", base["store"],
                       "--greedy", "--out", tmp_path / "eval", "--allow-partial")
    assert code == 0 and (tmp_path / "eval" / "eval.json").is_file()
    assert "--allow-partial" in json.dumps(json.loads((tmp_path / "eval" / "eval.json").read_text()))
