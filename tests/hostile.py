"""What the hostile-input tests share (``tests/test_hostile_*.py``, one file per family): the CLI run
in this process or a fresh one, and a digest of a folder. Their fixture ``base`` (a feature store of
the sample set and a finished tiny run on it) is in conftest.py, built once per test process.

Every case asserts the exit code, that no traceback reaches the user, that the message names the file
or option, and that nothing finished was lost or changed.
"""

import hashlib
import subprocess
import sys
from pathlib import Path


from captioning.cli import main
from captioning.backend import import_keras

keras = import_keras()
TINY = ["--epochs", "2", "--batch-size", "8", "--units", "8", "--embed-dim", "8", "--patience", "10",
        "--self-critical-epochs", "0", "--matcher-epochs", "0"]  # the self-critical epochs and the matcher have their own tests


def cli(capsys, *args):
    """Run the CLI in this process; return (exit code, stdout, stderr). No traceback may reach stderr."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def cli_process(*args, timeout=240):
    done = subprocess.run([sys.executable, "-m", "captioning", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def digest(folder: Path) -> dict:
    """Every file under ``folder`` → its sha256: 'nothing changed' is an equality of these."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def extract_args(base, out, *extra):
    return ["extract-features", base["data"] / "Images", "--backbone", "efficientnet_b0", "--weights", "none",
            "--out", out, "--batch-size", "4", *extra]


SLOW_FIT = """
import sys
from captioning.training import FitOptions, fit
fit(sys.argv[1], sys.argv[2], sys.argv[3], FitOptions(epochs=int(sys.argv[4]), batch_size=4, units=16, embed_dim=8,
    patience=100, seed=3, matcher_epochs=0), verbose=0)
"""
