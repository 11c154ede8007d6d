import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from PIL import Image

from captioning.cli import main
from captioning.backend import import_keras
from captioning.errors import CaptioningError
from captioning.features import FeatureStore, extract_features
from captioning.features.images import ImageError, load_image
from captioning.features.store import partial_dir
from captioning.features.writer import FeatureStoreWriter

BACKBONE = "efficientnet_b0"  # the fastest backbone whose random-init features are not degenerate


def attrs(shape=(3,), **kw):
    return {"backbone": "x", "weights": "none", "pooling": "avg", "input_size": 8,
            "feature_shape": list(shape), "dtype": "float32", **kw}


def test_store_layout_lazy_reads_and_unique_ids(tmp_path):
    w = FeatureStoreWriter(tmp_path / "s.h5", attrs())
    w.write_batch(["a.jpg", "b.jpg"], np.arange(6).reshape(2, 3), failed=[("bad.jpg", "corrupt")])
    w.write_batch(["sub/c.jpg"], np.full((1, 3), 9.0))
    store = w.finalize(completed=True)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["features"].shape == (3, 3) and f["features"].chunks is None  # contiguous: fast scattered rows
        assert f.attrs["completed"] and f.attrs["backbone"] == "x"
        assert list(f["failed/reasons"].asstr()[()]) == ["corrupt"]
    assert store.ids == ["a.jpg", "b.jpg", "sub/c.jpg"] and store.failed == {"bad.jpg": "corrupt"}
    np.testing.assert_array_equal(store[["sub/c.jpg", "a.jpg", "a.jpg"]], [[9, 9, 9], [0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(store["b.jpg"], [3, 4, 5])
    with pytest.raises(KeyError, match="nope.jpg"):
        store["nope.jpg"]
    assert not partial_dir(tmp_path / "s.h5").exists()
    # A second writer appends without duplicating what is stored.
    w2 = FeatureStoreWriter(tmp_path / "s.h5", attrs())
    assert w2.done == {"a.jpg", "b.jpg", "sub/c.jpg"}
    store.close()
    w2.write_batch(["bad.jpg"], np.ones((1, 3)))
    store = w2.finalize(completed=True)
    assert len(store) == 4 and store.failed == {}


def test_mismatched_store_is_refused_unless_overwrite(tmp_path):
    FeatureStoreWriter(tmp_path / "s.h5", attrs()).finalize(True).close()
    with pytest.raises(CaptioningError, match=r"made differently \(backbone: stored 'x', asked 'y'.*--overwrite"):
        FeatureStoreWriter(tmp_path / "s.h5", attrs(backbone="y"))
    w = FeatureStoreWriter(tmp_path / "s.h5", attrs(backbone="y"), overwrite=True)
    assert w.done == set()


def test_opening_an_interrupted_store_explains(tmp_path):
    w = FeatureStoreWriter(tmp_path / "s.h5", attrs())
    w.write_batch(["a.jpg"], np.ones((1, 3)))
    with pytest.raises(CaptioningError, match=r"extract-features \(process \d+\) is writing it now"):
        FeatureStore.open(tmp_path / "s.h5")  # still being written: not interrupted
    w.lock.release()  # as when the writer is killed: the kernel releases its lock
    with pytest.raises(CaptioningError, match="interrupted extraction.*run the same"):
        FeatureStore.open(tmp_path / "s.h5")


def make_bad_images(d):
    d.mkdir(parents=True, exist_ok=True)
    rgb = Image.new("RGB", (40, 30), (200, 10, 10))
    rgb.save(d / "good.jpg")
    data = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "text.jpg").write_bytes(b"this is not an image at all")
    (d / "empty.jpg").write_bytes(b"")
    rgb.convert("L").save(d / "gray.jpg")
    rgb.convert("CMYK").save(d / "cmyk.jpg")
    rgb.convert("P").save(d / "palette.png")
    Image.new("RGBA", (20, 20), (0, 0, 255, 0)).save(d / "rgba.png")
    Image.new("LA", (20, 20), (0, 128)).save(d / "la.png")
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(d / "sixteen.png")
    Image.new("RGB", (1, 1), (1, 2, 3)).save(d / "tiny.png")
    Image.new("1", (20000, 20000)).save(d / "bomb.png")  # ~400 Mpx, a few KB on disk
    return {"truncated.jpg", "text.jpg", "empty.jpg", "bomb.png"}


def test_load_image_conversions_and_reasons(tmp_path):
    bad = make_bad_images(tmp_path)
    for p in sorted(tmp_path.iterdir()):
        if p.name in bad:
            with pytest.raises(ImageError):
                load_image(p, 16)
        else:
            a = load_image(p, 16)
            assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    assert (load_image(tmp_path / "rgba.png", 4) == 255).all()  # transparent → white background
    assert (load_image(tmp_path / "sixteen.png", 4) == 255).all()  # 16-bit white stays white
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "bomb.png", 4)
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "text.jpg", 4)


def test_bad_images_never_stop_the_run(tmp_path, capsys):
    bad = make_bad_images(tmp_path / "imgs")
    out = tmp_path / "f.h5"
    args = ["extract-features", str(tmp_path / "imgs"), "--backbone", BACKBONE, "--weights", "none",
            "--out", str(out), "--batch-size", "4"]
    assert main(args) == 0
    assert "4 failed" in capsys.readouterr().out
    with FeatureStore.open(out) as store:
        assert set(store.failed) == bad and len(store) == 8 and store.attrs["completed"]
    assert main(args + ["--strict"]) == 3  # failures retried, still failing → non-zero with --strict


def test_float16_spatial_and_attributes(sample_dir, tmp_path):
    r = extract_features(sample_dir / "Images", backbone=BACKBONE, weights="none", out=tmp_path / "sp.h5",
                         pooling="spatial", dtype="float16", limit=3, batch_size=2, show_progress=False)
    s = r.store
    assert s.feature_shape == (49, 1280) and s.dtype == np.float16 and s.attrs["grid"] == [7, 7]
    for key in ("backbone", "weights", "input_size", "pooling", "feature_dim", "keras_version",
                "captioning_version", "preprocessing", "completed"):
        assert key in s.attrs
    assert s.attrs["weights"] == f"none (random init, seed 0, {import_keras().backend.backend()} backend)"
    assert len(set(s.ids)) == len(s.ids) == 3


def test_captions_restrict_and_default_output(sample_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = extract_features(sample_dir / "Images", backbone=BACKBONE, weights="none", limit=2,
                         captions=sample_dir, show_progress=False)
    assert r.store.path.resolve() == tmp_path / "features" / f"sample_{BACKBONE}.h5"
    assert r.store.ids == ["sample_00000.jpg", "sample_00001.jpg"]


_CHILD = """
import sys
from captioning.features import extract_features
extract_features(sys.argv[1], backbone=sys.argv[2], weights="none", out=sys.argv[3], batch_size=2,
                 show_progress=False, workers=1)
"""


def test_resume_after_kill_matches_uninterrupted_run(sample_dir, tmp_path):
    images = sample_dir / "Images"
    out = tmp_path / "killed.h5"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(images), BACKBONE, str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(partial_dir(out).glob("seg-*.h5"))) < 3:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    segments = list(partial_dir(out).glob("seg-*.h5"))
    assert len(segments) >= 3 and not out.exists(), "the child should have been killed mid-run"
    resumed = extract_features(images, backbone=BACKBONE, weights="none", out=out, batch_size=2,
                               show_progress=False)
    assert resumed.skipped >= 6 and resumed.written == 60 - resumed.skipped
    full = extract_features(images, backbone=BACKBONE, weights="none", out=tmp_path / "full.h5",
                            batch_size=2, show_progress=False).store
    store = resumed.store
    assert sorted(store.ids) == sorted(full.ids) and len(set(store.ids)) == 60
    np.testing.assert_allclose(store[full.ids], full[full.ids], rtol=1e-4, atol=1e-4)


def test_image_list_restricts_and_missing_files_are_recorded(sample_dir, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("sample_00003.jpg\n\nsample_00001.jpg\nsample_00003.jpg\nnot_there.jpg\n")
    r = extract_features(sample_dir / "Images", backbone=BACKBONE, weights="none", out=tmp_path / "l.h5",
                         image_list=listing, show_progress=False)
    assert r.store.ids == ["sample_00003.jpg", "sample_00001.jpg"]
    assert r.store.failed == {"not_there.jpg": "file not found"}
    assert "1 failed" in r.summary() and "not_there.jpg: file not found" in r.summary()


def test_mixed_precision_matches_float32_and_leaves_the_global_policy(sample_dir, tmp_path, monkeypatch):
    from captioning.backend import import_keras
    from captioning import hardware
    keras = import_keras()
    kw = dict(backbone="efficientnet_b0", weights="none", limit=8, show_progress=False)
    full = extract_features(sample_dir / "Images", out=tmp_path / "f32.h5", **kw).store
    assert full.attrs["compute_dtype_policy"] == "float32"
    monkeypatch.setattr(hardware, "gpu_visible", lambda: False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    mixed = extract_features(sample_dir / "Images", out=tmp_path / "bf16.h5", mixed_precision=True, **kw).store
    assert mixed.attrs["compute_dtype_policy"] == "mixed_bfloat16"
    assert "computed in mixed_bfloat16" in mixed.describe() and "computed in" not in full.describe()
    assert keras.config.dtype_policy().name == "float32"  # decoders built later stay float32
    a, b = full[full.ids], mixed[full.ids]
    assert b.dtype == np.float32
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999 and not np.array_equal(a, b)  # same network, bfloat16 arithmetic
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    with pytest.raises(CaptioningError, match="needs a GPU, or a CPU with bfloat16"):
        extract_features(sample_dir / "Images", out=tmp_path / "no.h5", mixed_precision=True, **kw)


def test_three_shards_merge_to_exactly_the_single_process_store(sample_dir, tmp_path, capsys):
    whole = extract_features(sample_dir / "Images", backbone="efficientnet_b0", weights="none", out=tmp_path / "all.h5",
                             show_progress=False).store
    parts = []
    for k in (1, 2, 3):
        assert main(["extract-features", str(sample_dir / "Images"), "--backbone", "efficientnet_b0", "--weights",
                     "none", "--shard", f"{k}/3", "--out", str(tmp_path / f"part{k}.h5")]) == 0
        parts.append(str(tmp_path / f"part{k}.h5"))
    sizes = [len(FeatureStore.open(p)) for p in parts]
    assert sum(sizes) == len(whole) and max(sizes) - min(sizes) <= 1
    assert main(["merge-features", "--out", str(tmp_path / "merged.h5"), *parts]) == 0
    assert "Merged 3 stores into" in capsys.readouterr().out
    merged = FeatureStore.open(tmp_path / "merged.h5")
    assert sorted(merged.ids) == sorted(whole.ids) and merged.attrs["completed"]
    np.testing.assert_array_equal(merged[whole.ids], whole[whole.ids])
    assert merged.spec.compatible_with(whole.spec)
    # a missing shard is reported and the result marked incomplete; mixed networks are refused
    assert main(["merge-features", "--out", str(tmp_path / "two.h5"), *parts[:2]]) == 3
    out, err = capsys.readouterr()
    assert "Merged 2 stores" in out and "shards 3/3 are missing" in out
    assert main(["merge-features", parts[0], parts[1]]) == 2 and "--out OUT.h5" in capsys.readouterr().err
    other = extract_features(sample_dir / "Images", backbone="efficientnet_b0", weights="none", seed=9, limit=3,
                             out=tmp_path / "other.h5", show_progress=False).store.path
    assert main(["merge-features", "--out", str(tmp_path / "bad.h5"), parts[0], str(other)]) == 1
    assert "made differently" in capsys.readouterr().err
    # a whole store with one of its shards is complete: nothing is missing
    assert main(["merge-features", "--out", str(tmp_path / "whole+1.h5"), str(tmp_path / "all.h5"), parts[0]]) == 0
    out = capsys.readouterr().out
    assert "missing" not in out and f"{sizes[0]} images were in more than one part" in out
    assert FeatureStore.open(tmp_path / "whole+1.h5").attrs["completed"]


def test_merging_stores_of_other_photos_under_the_same_names_says_so(sample_dir, tmp_path, capsys):
    import shutil
    names = sorted(p.name for p in (sample_dir / "Images").iterdir())[:6]
    for folder, order in (("a", names), ("b", names[1:] + names[:1])):  # b: the same names, other photos
        (tmp_path / folder).mkdir()
        for name, source in zip(names, order):
            shutil.copy(sample_dir / "Images" / source, tmp_path / folder / name)
        assert main(["extract-features", str(tmp_path / folder), "--backbone", "efficientnet_b0", "--weights", "none",
                     "--out", str(tmp_path / f"{folder}.h5")]) == 0
    capsys.readouterr()
    assert main(["merge-features", "--out", str(tmp_path / "ab.h5"), str(tmp_path / "a.h5"), str(tmp_path / "b.h5")]) == 0
    out = capsys.readouterr().out
    assert "different image folders" in out and "6 of them have other features in another part" in out


def test_spatial_stores_stream_in_blocks_of_bytes_not_rows(tmp_path, monkeypatch):
    """A COCO-sized grid store is 15 GB: statistics, merging and pooling read it a block of
    about BLOCK_BYTES at a time, and give what a whole read gives."""
    from captioning.features import store as store_module, writer as writer_module
    from captioning.features.merge import merge_features
    from captioning.inference.consensus import pooled_features
    monkeypatch.setattr(store_module, "BLOCK_BYTES", 100)  # two 4×3 float32 rows (48 bytes each)
    monkeypatch.setattr(writer_module, "BLOCK_BYTES", 100)
    x = np.random.default_rng(0).normal(size=(7, 4, 3)).astype(np.float32)
    parts = []
    for k, rows in enumerate((range(0, 4), range(4, 7))):
        w = FeatureStoreWriter(tmp_path / f"p{k}.h5", attrs((4, 3), pooling="spatial", grid=[2, 2]))
        for i in rows:  # one segment per row: finalize merges them a block at a time
            w.write_batch([f"{i}.jpg"], x[i:i + 1])
        parts.append(w.finalize(True).path)
    merged, _ = merge_features(tmp_path / "all.h5", parts)
    assert merged.rows_per_block() == 2
    np.testing.assert_array_equal(merged[[f"{i}.jpg" for i in range(7)]], x)
    read, real_rows = [], store_module.FeatureStore.rows
    monkeypatch.setattr(store_module.FeatureStore, "rows", lambda self, r: (read.append(len(r)), real_rows(self, r))[1])
    mean, std = merged.statistics(range(7))
    np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, x.reshape(-1, 3).std(0), rtol=1e-5)
    np.testing.assert_allclose(pooled_features(merged, [f"{i}.jpg" for i in (6, 0, 3)]), x[[6, 0, 3]].mean(1),
                               rtol=1e-6)
    assert read and max(read) == 2
    monkeypatch.setattr(store_module, "INDICES_PER_READ", 2)  # h5py reads long row lists slowly: in pieces
    order = [6, 0, 3, 3, 5, 1]
    np.testing.assert_array_equal(real_rows(merged, order), x[order])


def test_merging_keeps_a_few_numbers_per_image_not_its_row():
    """merge-features remembers each image's row to tell a clash from a duplicate: 64 numbers, not
    a view that keeps the whole 7×7×1,280 row alive (a COCO-sized grid store ran out of 24 GB)."""
    from captioning.features.merge import _digest
    kept = _digest(np.ones((49, 1280), np.float16))
    assert kept.shape == (64,) and (kept.base is None or kept.base.nbytes <= 64 * 4)
