"""Data that is quietly wrong: noted, refused or cut, never silently trained on."""

import json
import shutil

import pandas as pd

from captioning.features import FeatureStore

from hostile import TINY, cli


def test_unbalanced_quote_in_csv_names_file_and_line(capsys, tmp_path):
    lines = ["image,caption", "a.jpg,A dog runs", 'b.jpg,"A cat sits', "c.jpg,A bird flies", "d.jpg,Two men"]
    (tmp_path / "captions.txt").write_text("\n".join(lines))
    code, _, err = cli(capsys, "info", tmp_path)
    assert code == 1 and "captions.txt, line 3" in err and "quote" in err


def _flickr(tmp_path, captions, splits=None):
    """A Flickr8k-layout folder with these (image, caption) pairs; all images in train unless told."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    token = "\n".join(f"{i}#{n}\t{c}" for n, (i, c) in enumerate(captions))
    (tmp_path / "Flickr8k.token.txt").write_text(token)
    splits = splits or {"train": sorted({i for i, _ in captions})}
    for split, fname in (("train", "trainImages"), ("dev", "devImages"), ("test", "testImages")):
        (tmp_path / f"Flickr_8k.{fname}.txt").write_text("\n".join(splits.get(split, [])))
    return tmp_path


def test_duplicates_and_split_names_without_captions_are_noted(capsys, tmp_path):
    data = _flickr(tmp_path, [("a.jpg", "a dog"), ("a.jpg", "a dog"), ("b.jpg", "a cat")],
                   {"train": ["a.jpg", "b.jpg", "ghost.jpg"]})
    code, out, _ = cli(capsys, "info", data)
    assert code == 0 and "1 duplicate captions" in out and "1 images named in the split lists have no caption" in out


def test_karpathy_images_without_sentences_are_noted(capsys, tmp_path):
    d = {"dataset": "x", "images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "a dog"}]},
                                    {"filename": "b.jpg", "split": "train", "sentences": []}]}
    (tmp_path / "dataset_x.json").write_text(json.dumps(d))
    code, out, _ = cli(capsys, "info", tmp_path)
    assert code == 0 and "1 images have no sentences" in out


def _renamed_sample(base, tmp_path, edit):
    """The sample data set with its caption file edited; the images and features stay the same."""
    data = tmp_path / "data"
    shutil.copytree(base["data"], data, ignore=shutil.ignore_patterns("Images"))
    (data / "Images").symlink_to(base["data"] / "Images")
    token = data / "Flickr8k.token.txt"
    token.write_text("\n".join(edit(token.read_text().splitlines())))
    return data


def test_punctuation_only_captions_are_skipped_and_noted(base, capsys, tmp_path):
    data = _renamed_sample(base, tmp_path, lambda lines: [line.split("\t")[0] + "\t?!." if n % 5 == 0 else line
                                                          for n, line in enumerate(lines)])
    code, out, _ = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", tmp_path / "r", *TINY)
    assert code == 0 and "have no words after cleaning" in out
    code, out, _ = cli(capsys, "info", data)  # info counts what fit trains on, and says what it left out
    total = len((data / "Flickr8k.token.txt").read_text().splitlines())
    assert code == 0 and f"{(total + 4) // 5} captions have no words after cleaning" in out


def test_info_says_when_no_caption_has_a_word(base, capsys, tmp_path):
    data = _renamed_sample(base, tmp_path, lambda lines: [line.split("\t")[0] + "\t..." for line in lines])
    code, out, _ = cli(capsys, "info", data)
    assert code == 0 and "no caption has a word left after cleaning" in out and "fit` refuses" in out


def test_a_data_set_with_no_usable_caption_does_not_train(base, capsys, tmp_path):
    data = _renamed_sample(base, tmp_path, lambda lines: [line.split("\t")[0] + "\t..." for line in lines])
    code, _, err = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", tmp_path / "r", *TINY)
    assert code == 1 and "no train caption has a word" in err and not (tmp_path / "r" / "model.keras").exists()


def test_a_giant_caption_is_cut_at_the_length_percentile_with_a_note(base, capsys, tmp_path):
    data = _renamed_sample(base, tmp_path, lambda lines: [lines[0].split("\t")[0] + "\t" + "dog " * 10_000]
                           + lines[1:])
    code, out, _ = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", tmp_path / "r", *TINY)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert code == 0 and config["decoder"]["max_length"] < 40 and "were cut" in out


def test_a_data_set_without_dev_images_says_how_to_name_them(base, capsys, tmp_path):
    ids = FeatureStore.open(base["store"]).ids[:6]
    data = tmp_path / "data"
    data.mkdir()
    (data / "captions.csv").write_text("image,caption\n" + "".join(f"{i},a red square\n" for i in ids))
    (data / "Flickr_8k.trainImages.txt").write_text("\n".join(ids[:5]) + "\n")
    (data / "Flickr_8k.testImages.txt").write_text(ids[5] + "\n")
    code, _, err = cli(capsys, "fit", "--captions", data / "captions.csv", "--features", base["store"], "--out",
                       tmp_path / "run", *TINY)
    assert code == 1 and "no dev image" in err and "Flickr_8k.devImages.txt" in err
    assert not (tmp_path / "run").exists()


def test_a_single_train_image_gives_a_finite_loss(base, capsys, tmp_path):
    train = pd.read_csv(base["data"] / "Flickr_8k.trainImages.txt", header=None)[0].tolist()
    data = _renamed_sample(base, tmp_path, lambda lines: lines)
    (data / "Flickr_8k.trainImages.txt").write_text(train[0])
    code, out, _ = cli(capsys, "fit", "--captions", data, "--features", base["store"], "--out", tmp_path / "r", *TINY)
    history = pd.read_csv(tmp_path / "r" / "history.csv")
    assert code == 0 and history["val_loss"].max() < 50


def test_image_list_names_outside_the_folder_are_refused(base, capsys, tmp_path):
    (tmp_path / "list.txt").write_text("ok.jpg\n../../etc/passwd\n")
    code, _, err = cli(capsys, "extract-features", base["data"] / "Images", "--backbone", "efficientnet_b0",
                       "--weights", "none", "--image-list", tmp_path / "list.txt", "--out", tmp_path / "f.h5")
    assert code == 1 and "list.txt, line 2" in err and "outside the images folder" in err
