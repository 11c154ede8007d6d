"""File-system oddities and odd arrays: special files, names that would split a line, empty arrays,
weights files recorded without their hash."""

import os
import shutil

import numpy as np
import pytest

from hostile import cli, cli_process


def test_a_fifo_among_the_photos_is_reported_not_waited_on(base, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in sorted(os.listdir(base["data"] / "Images"))[:2]:
        shutil.copy(base["data"] / "Images" / name, photos / name)
    os.mkfifo(photos / "x.jpg")  # opening it for reading would block until a writer comes: none will
    done = cli_process("caption", photos, photos / "x.jpg", "--run", base["run"], "--greedy", timeout=120)
    assert done.returncode == 3, done.stderr  # the folder lists regular files only; the FIFO named is reported
    assert "x.jpg: cannot caption: not a regular file" in done.stderr
    assert len(done.stdout.splitlines()) == 2


def test_a_file_name_with_a_line_break_stays_on_one_tsv_line(base, capsys, tmp_path):
    odd = tmp_path / "two\nlines\tand a tab.jpg"
    shutil.copy(sorted((base["data"] / "Images").iterdir())[0], odd)
    code, out, _ = cli(capsys, "caption", odd, "--run", base["run"], "--greedy")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1
    name, caption = lines[0].split("\t")
    assert name.endswith("two\\nlines\\tand a tab.jpg") and caption


def test_a_file_name_that_is_not_utf8_is_listed_as_failed_and_the_rest_stored(base, tmp_path):
    from captioning.features import FeatureStore
    photos = tmp_path / "photos"
    photos.mkdir()
    first, second = sorted((base["data"] / "Images").iterdir())[:2]
    shutil.copy(first, photos / first.name)
    shutil.copy(second, os.path.join(os.fsencode(photos), b"\xff\xfe.jpg"))  # bytes no UTF-8 decoder accepts
    for attempt in range(2):  # and again: the resumed store neither crashes nor duplicates the entry
        done = cli_process("extract-features", photos, "--backbone", "efficientnet_b0", "--weights", "none",
                           "--out", tmp_path / "f.h5")
        assert done.returncode == 0, done.stderr
        assert "\\xff\\xfe.jpg: its file name is not valid UTF-8" in done.stdout
    store = FeatureStore.open(tmp_path / "f.h5")
    assert store.ids == [first.name] and list(store.failed) == ["\\xff\\xfe.jpg"]
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "captioning", "caption", str(photos), "--run", str(base["run"]),
                           "--greedy"], capture_output=True, timeout=240)  # bytes: the name is printed as it is
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2, done.stderr
    assert b"\xff\xfe.jpg\t" in done.stdout


@pytest.mark.parametrize("shape", [(0, 0, 3), (4, 0, 3), (4, 4, 2), (7,)])
def test_an_array_that_is_no_image_is_an_error_not_a_caption(base, shape):
    from captioning.features.images import ImageError
    from captioning.inference import Captioner
    with pytest.raises(ImageError, match=f"shape {shape}".replace("(", r"\(").replace(")", r"\)")):
        Captioner.load(base["run"]).caption([np.zeros(shape, np.uint8)], "greedy")


def test_a_huge_max_length_is_refused_and_a_long_one_costs_what_is_written(base, capsys):
    """--max-length 2000000000 once allocated images × max-length up front (60 GiB), and a caption
    that never ends would run that many steps: the option has a ceiling, and memory follows the words."""
    import resource
    image = sorted((base["data"] / "Images").iterdir())[0]
    code, out, err = cli(capsys, "caption", image, "--run", base["run"], "--max-length", "2000000000")
    assert code == 2 and "--max-length" in err and "≤ 1000" in err and not out
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for how in ("--greedy", "--sample"):
        code, out, _ = cli(capsys, "caption", image, "--run", base["run"], how, "--max-length", "1000")
        assert code == 0 and out.strip()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB


def test_a_batch_size_beyond_the_images_costs_memory_for_the_images(base, capsys, tmp_path):
    """--limit 8 --batch-size 100000 once padded every batch to 100,000 images (56 GiB)."""
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out, _ = cli(capsys, "extract-features", base["data"] / "Images", "--backbone", "efficientnet_b0",
                       "--weights", "none", "--limit", "8", "--batch-size", "100000", "--out", tmp_path / "f.h5")
    assert code == 0 and "8 images" in out
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000  # KiB
