import json

import pytest

from captioning.cli import main
from captioning.data import (CleaningOptions, Vocabulary, load_captions, make_sample,
                             max_caption_length, summarize, tokenize)
from captioning.data.formats import detect_format, seeded_split
from captioning.errors import CaptioningError, DataFormatError


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def flickr8k_original(root, newline="\n", bom=False, final_newline=True):
    lines = ["a.jpg#0\tA dog runs .", "a.jpg#1\tThe dog's running!", "b.jpg#0\tTwo cats, 3 mice.",
             "c.jpg#0\tA bird .", "zz.jpg.1#0\tbogus key"]
    text = ("\ufeff" if bom else "") + newline.join(lines) + (newline if final_newline else "")
    write(root / "Flickr8k.token.txt", text)
    write(root / "Flickr_8k.trainImages.txt", "a.jpg\n")
    write(root / "Flickr_8k.devImages.txt", "b.jpg\n")
    write(root / "Flickr_8k.testImages.txt", "c.jpg")
    for name in "abc":
        write(root / "Images" / f"{name}.jpg", "x")
    return root


def test_flickr8k_original(tmp_path):
    ds = load_captions(flickr8k_original(tmp_path))
    assert ds.format == "flickr8k" and ds.images_root == tmp_path / "Images"
    assert ds.images("train") == ["a.jpg"] and ds.images("dev") == ["b.jpg"] and ds.images("test") == ["c.jpg"]
    assert list(ds.split("train")["caption"]) == ["A dog runs .", "The dog's running!"]
    assert set(ds.table.loc[ds.table.split == "", "image"]) == {"zz.jpg.1"}
    assert any("zz.jpg.1" in n for n in ds.notes)


@pytest.mark.parametrize("newline,bom,final", [("\r\n", True, True), ("\n", False, False)])
def test_bom_crlf_and_missing_final_newline(tmp_path, newline, bom, final):
    ds = load_captions(flickr8k_original(tmp_path, newline, bom, final))
    assert ds.table.iloc[0]["image"] == "a.jpg"
    assert not any(c.endswith("\r") for c in ds.table["caption"])
    assert len(ds.table) == 5


def test_kaggle_layout_quoted_commas_and_seeded_split(tmp_path):
    rows = ["image,caption"] + [f'img{i}.jpg,"A dog , running {i}"' for i in range(40)]
    write(tmp_path / "captions.txt", "\n".join(rows))
    ds = load_captions(tmp_path)
    assert ds.format == "flickr8k-kaggle"
    assert ds.table.iloc[0]["caption"] == "A dog , running 0"
    sizes = {s: len(ds.images(s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 30, "dev": 5, "test": 5}
    again = load_captions(tmp_path)
    assert ds.images("test") == again.images("test")
    assert load_captions(tmp_path, split_seed=7).images("test") != ds.images("test")


def test_kaggle_uses_split_lists_when_present(tmp_path):
    write(tmp_path / "captions.txt", "image,caption\na.jpg,one\nb.jpg,two\nc.jpg,three\n")
    write(tmp_path / "Flickr_8k.trainImages.txt", "a.jpg\nb.jpg\n")
    write(tmp_path / "Flickr_8k.devImages.txt", "c.jpg\n")
    ds = load_captions(tmp_path, format="flickr8k-kaggle")
    assert ds.images("train") == ["a.jpg", "b.jpg"] and ds.images("dev") == ["c.jpg"]


def test_flickr30k_csv_and_token(tmp_path):
    write(tmp_path / "a" / "results.csv",
          "image_name| comment_number| comment\n1.jpg| 0| A man , smiling .\n1.jpg| 1| Someone.\n2.jpg| 0| Cat\n")
    ds = load_captions(tmp_path / "a")
    assert ds.format == "flickr30k" and list(ds.table["caption"])[:1] == ["A man , smiling ."]
    write(tmp_path / "b" / "results_20130124.token", "1.jpg#0\tA man .\n2.jpg#0\tA cat .\n")
    ds = load_captions(tmp_path / "b" / "results_20130124.token", format="flickr30k")
    assert ds.images() == ["1.jpg", "2.jpg"]


def test_coco(tmp_path):
    def coco(split, ids):
        return {"images": [{"id": i, "file_name": f"COCO_{split}_{i:012d}.jpg"} for i in ids],
                "annotations": [{"image_id": i, "id": 10 * i + k, "caption": f"cap {k}"} for i in ids for k in range(2)]}
    write(tmp_path / "annotations" / "captions_train2014.json", json.dumps(coco("train2014", [1, 2, 3])))
    write(tmp_path / "annotations" / "captions_val2014.json", json.dumps(coco("val2014", [4, 5, 6, 7])))
    (tmp_path / "train2014").mkdir()
    (tmp_path / "val2014").mkdir()
    ds = load_captions(tmp_path)
    assert ds.format == "coco" and ds.images_root == tmp_path
    assert len(ds.images("train")) == 3 and ds.images("train")[0] == "train2014/COCO_train2014_000000000001.jpg"
    assert len(ds.images("dev")) == 2 and len(ds.images("test")) == 2
    assert len(ds.table) == 14


def test_karpathy_restval_is_train(tmp_path):
    d = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "x.jpg", "split": "restval", "sentences": [{"raw": "A b."}]},
        {"filepath": "val2014", "filename": "y.jpg", "split": "val", "sentences": [{"raw": "C d."}]},
        {"filepath": "train2014", "filename": "z.jpg", "split": "test",
         "sentences": [{"tokens": ["e", "f"]}, {"raw": ""}]}]}
    write(tmp_path / "dataset_coco.json", json.dumps(d))
    ds = load_captions(tmp_path / "dataset_coco.json")
    assert ds.format == "karpathy" and ds.name == "coco"
    assert ds.images("train") == ["val2014/x.jpg"] and ds.images("dev") == ["val2014/y.jpg"]
    assert list(ds.split("test")["caption"]) == ["e f"]
    assert any("1 empty" in n for n in ds.notes)


def test_detect_format_by_file(tmp_path):
    p = write(tmp_path / "whatever.txt", "image,caption\na.jpg,x\n")
    assert detect_format(p)[0] == "flickr8k-kaggle"
    with pytest.raises(CaptioningError, match="found no captions file"):
        detect_format(tmp_path / "empty_dir") if (tmp_path / "empty_dir").mkdir() is None else None


def test_malformed_line_names_file_and_line(tmp_path):
    write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\tok\nthis line has no tab\n")
    with pytest.raises(DataFormatError) as e:
        load_captions(tmp_path)
    assert e.value.line == 2 and "Flickr8k.token.txt, line 2" in str(e.value) and "no tab" in str(e.value)


@pytest.mark.parametrize("name", ["../secret.jpg", "/etc/passwd.jpg", "a/../../b.jpg", "C:\\x.jpg"])
def test_names_escaping_the_root_are_refused(tmp_path, name):
    write(tmp_path / "Flickr8k.token.txt", f"a.jpg#0\tfine\n{name}#0\tbad\n")
    with pytest.raises(DataFormatError, match="line 2.*outside the images folder"):
        load_captions(tmp_path)


def test_empty_captions_are_skipped_and_noted(tmp_path):
    write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\t  \na.jpg#1\tA dog\n")
    ds = load_captions(tmp_path)
    assert list(ds.table["caption"]) == ["A dog"] and any("1 empty" in n for n in ds.notes)


def test_on_missing_skip_and_error(tmp_path):
    flickr8k_original(tmp_path)
    (tmp_path / "Images" / "b.jpg").unlink()
    assert "b.jpg" in load_captions(tmp_path).images()
    ds = load_captions(tmp_path, on_missing="skip")
    assert "b.jpg" not in ds.images() and any("missing" in n and "b.jpg" in n for n in ds.notes)
    with pytest.raises(CaptioningError, match=r"(?s)2 of 4 captioned images are missing.*b\.jpg.*--on-missing"):
        load_captions(tmp_path, on_missing="error")


def test_cleaning_options():
    caption = "The dog's can't run-fast in 2 parks, isn't it? I x"
    assert tokenize(caption) == ["the", "dog", "can", "not", "run", "fast", "in", "parks", "is", "not", "it"]
    raw = tokenize(caption, CleaningOptions(lowercase=False, strip_punctuation=False, drop_numeric=False,
                                            expand_contractions=False, drop_single_letters=False))
    assert raw == caption.split()
    assert "2" in tokenize(caption, CleaningOptions(drop_numeric=False, drop_single_letters=False))
    assert "2" not in tokenize(caption, CleaningOptions(drop_single_letters=False))
    assert "I" not in tokenize(caption, CleaningOptions(lowercase=False))
    assert tokenize("A cat", CleaningOptions()) == ["a", "cat"]
    with pytest.raises(ValueError, match="unknown cleaning options"):
        CleaningOptions.from_dict({"stem": True})


def test_vocabulary_round_trip(tmp_path):
    opts = CleaningOptions(drop_numeric=False)
    caps = [tokenize(c, opts) for c in ["a dog runs", "a dog sits", "a cat", "2 birds"]]
    v = Vocabulary.build(caps, min_count=2, cleaning=opts)
    assert v.tokens == ["<pad>", "<unk>", "startseq", "endseq", "a", "dog"]
    assert v.encode(["a", "cat"]) == [2, 4, 1, 3]
    assert v.decode([2, 4, 5, 3, 5]) == ["a", "dog"]
    assert v.encode_caption("22 Dogs, a DOG") == [2, 1, 1, 4, 5, 3]
    loaded = Vocabulary.load(v.save(tmp_path / "vocab.json"))
    assert loaded == v and loaded.cleaning == opts and loaded.counts == {"a": 3, "dog": 2}
    write(tmp_path / "bad.json", '{"tokens": ["x"]}')
    with pytest.raises(CaptioningError, match="not a captioning vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


def test_max_caption_length():
    caps = [["a"] * n for n in range(1, 101)]
    assert max_caption_length(caps) == 102
    assert max_caption_length(caps, percentile=50) == 52  # a length some caption has (median 52.5)


def test_seeded_split_sizes():
    split = seeded_split([f"{i}.jpg" for i in range(8091)])
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "dev", "test")}
    assert counts == {"train": 6091, "dev": 1000, "test": 1000}
    for n, dev in ((2, 0), (3, 1), (4, 1), (12, 2)):  # from 3 images on, dev and test are never empty
        split = list(seeded_split([f"{i}.jpg" for i in range(n)]).values())
        assert split.count("dev") == split.count("test") == dev and split.count("train") == n - 2 * dev


def test_sample_is_deterministic(tmp_path):
    a, b, c = (make_sample(tmp_path / n, images=12, seed=s) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    for name in ["Flickr8k.token.txt", "Flickr_8k.testImages.txt", "Images/sample_00007.jpg"]:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "Flickr8k.token.txt").read_bytes() != (c / "Flickr8k.token.txt").read_bytes()
    ds = load_captions(a, on_missing="error")
    assert len(ds.table) == 60 and all(ds.table.groupby("image").size() == 5)
    assert {len(ds.images(s)) for s in ("dev", "test")} == {2}


def test_sample_captions_describe_the_scene(sample_dir):
    scenes = json.loads((sample_dir / "scenes.json").read_text())
    ds = load_captions(sample_dir)
    for image, group in ds.table.groupby("image"):
        for obj in scenes[image]:
            assert all(obj["colour"] in c and obj["shape"] in c for c in group["caption"])


def test_summary_counts(sample_dir):
    s = summarize(load_captions(sample_dir), min_count=1)
    assert s.per_split == {"train": (42, 210), "dev": (9, 45), "test": (9, 45)}
    assert s.missing_on_disk == [] and s.never_captioned == []
    assert 10 < s.vocabulary_size < 40


def test_make_sample_names_the_new_spelling_of_the_old_images_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["make-sample", str(tmp_path / "s"), "--images", "10"])
    assert e.value.code == 2 and "--images was renamed in 0.9: use --scenes" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_cli_make_sample_and_info(tmp_path, capsys):
    assert main(["make-sample", str(tmp_path / "s"), "--scenes", "10"]) == 0
    (tmp_path / "s" / "Images" / "extra.jpg").write_bytes(b"x")
    (tmp_path / "s" / "Images" / "sample_00000.jpg").unlink()
    capsys.readouterr()
    assert main(["info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "train        6 images       30 captions" in out
    assert "captioned but missing on disk: 1 (sample_00000.jpg)" in out
    assert "on disk but never captioned: 1 (extra.jpg)" in out


def test_cli_error_exit_code(tmp_path, capsys):
    write(tmp_path / "Flickr8k.token.txt", "no tab here\n")
    assert main(["info", str(tmp_path)]) == 1
    assert "line 1" in capsys.readouterr().err
