"""Every option validated: usage errors (exit 2) that name the option and its range."""

import shutil

import pytest

from captioning.features import FeatureStore

from hostile import TINY, cli


FIT_BAD = [("--epochs", "0"), ("--epochs", "-3"), ("--epochs", "abc"), ("--batch-size", "0"), ("--units", "0"),
           ("--embed-dim", "0"), ("--dropout", "1"), ("--dropout", "-0.1"), ("--dropout", "nan"),
           ("--learning-rate", "0"), ("--learning-rate", "-1e-3"), ("--max-length-percentile", "101"),
           ("--max-length-percentile", "0"), ("--min-count", "0"), ("--patience", "0"), ("--attention-dim", "0"),
           ("--doubly-stochastic", "-1"), ("--doubly-stochastic", "inf"), ("--learning-rate", "inf"),
           ("--decoder", "lstm"), ("--monitor", "accuracy"), ("--seed", "-1"), ("--seed", "4294967296")]


@pytest.mark.parametrize("option,value", FIT_BAD)
def test_fit_option_out_of_range_is_a_usage_error(capsys, tmp_path, option, value):
    code, _, err = cli(capsys, "fit", "--captions", tmp_path, "--features", tmp_path / "f.h5", "--out",
                       tmp_path / "run", option, value)
    assert code == 2 and option in err
    assert not (tmp_path / "run").exists()


def test_a_range_open_at_the_top_is_said_plainly(capsys, tmp_path):
    code, _, err = cli(capsys, "fit", "--captions", tmp_path, "--features", tmp_path / "f.h5", "--out",
                       tmp_path / "run", "--dropout", "1")
    assert code == 2 and "--dropout: 1 is out of range: must be ≥ 0 and < 1" in err, err


CAPTION_BAD = [("--beam", "-1"), ("--max-length", "1"), ("--temperature", "0"), ("--temperature", "-2"),
               ("--top-k", "-1"), ("--length-penalty", "-1"), ("--length-penalty", "inf"), ("--temperature", "inf"),
               ("--matching", "-1"), ("--matching", "inf"), ("--matching", "nan"),
               ("--likelihood", "-0.1"), ("--likelihood", "inf"), ("--seed", "-1"), ("--seed", "4294967296"),
               ("--max-length", "1001")]


@pytest.mark.parametrize("option,value", CAPTION_BAD)
def test_caption_option_out_of_range_is_a_usage_error(capsys, tmp_path, option, value):
    code, _, err = cli(capsys, "caption", tmp_path / "x.jpg", "--run", tmp_path, option, value)
    assert code == 2 and option in err


@pytest.mark.parametrize("command,option,value", [
    ("evaluate", "--limit", "0"), ("evaluate", "--limit", "-5"), ("evaluate", "--beam", "-2"),
    ("extract-features", "--batch-size", "0"), ("extract-features", "--limit", "0"),
    ("extract-features", "--workers", "-1"), ("extract-features", "--shard", "4/3"),
    ("extract-features", "--shard", "half"), ("extract-features", "--backbone", "resnet5"),
    ("demo", "--scenes", "0"), ("demo", "--scenes", "-5"), ("demo", "--images", "2"), ("demo", "--epochs", "0"),
    ("demo", "--backbone", "nonsense"), ("make-sample", "--scenes", "2"), ("info", "--min-count", "0"),
    ("make-sample", "--seed", "-1"), ("make-sample", "--seed", "4294967296"), ("extract-features", "--seed", "-1"),
    ("evaluate", "--seed", "4294967296")])
def test_other_options_out_of_range_are_usage_errors(capsys, tmp_path, command, option, value):
    args = {"evaluate": ["evaluate", "--run", tmp_path, "--captions", tmp_path, "--features", tmp_path / "f.h5"],
            "extract-features": ["extract-features", tmp_path, "--backbone", "resnet50"],
            "demo": ["demo", "--out", tmp_path / "demo"], "make-sample": ["make-sample", tmp_path / "sample"],
            "info": ["info", tmp_path]}[command]
    code, _, err = cli(capsys, *args, option, value)
    assert code == 2 and option in err
    assert not (tmp_path / "demo").exists() and not (tmp_path / "sample").exists()  # refused before any work


@pytest.mark.parametrize("args, says", [
    (["extract-features", "IMG", "--backbone", "resnet50", "-o", "f.h5"], "did you mean --out instead of -o?"),
    (["caption", "x.jpg", "--run", "r", "--beem", "3"], "did you mean --beam instead of --beem?"),
    (["info", "DATA", "--wat"], "unrecognized arguments: --wat; see `captioning info --help`")])
def test_an_unknown_option_names_the_command_and_the_option_meant(capsys, tmp_path, args, says):
    code, _, err = cli(capsys, *[str(tmp_path) if a in ("IMG", "DATA") else a for a in args])
    assert code == 2 and says in err
    assert f"usage: captioning {args[0]}" in err and f"captioning {args[0]}: error" in err


def test_a_backbone_name_may_be_spelled_as_keras_does(capsys, tmp_path):
    code, _, err = cli(capsys, "extract-features", tmp_path / "none", "--backbone", "MobileNet-V2", "--weights", "none")
    assert code == 1 and "--backbone" not in err  # accepted; the missing folder is what stops it


@pytest.mark.parametrize("name,says", [("out.txt", "format"), ("noext", "format"), ("folder.png", "is a folder"),
                                       ("afile/x.png", "is a file, not a folder")])
def test_a_figure_path_that_cannot_be_written_is_a_usage_error_before_any_work(base, capsys, tmp_path, name, says):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "afile").write_text("x")
    image = base["data"] / "Images" / FeatureStore.open(base["store"]).ids[0]
    for option in ("--figure", "--attention-figure"):
        code, out, err = cli(capsys, "caption", image, "--run", base["run"], option, tmp_path / name)
        assert code == 2 and option in err and says in err and not out


def test_figures_go_into_new_folders_in_the_format_named_and_captions_come_first(base, capsys, tmp_path):
    images = [base["data"] / "Images" / i for i in FeatureStore.open(base["store"]).ids[:2]]
    code, out, err = cli(capsys, "caption", *images, "--run", base["run"], "--figure", tmp_path / "a" / "b" / "grid.pdf")
    assert code == 0 and len(out.splitlines()) == 2
    assert (tmp_path / "a" / "b" / "grid.pdf").read_bytes().startswith(b"%PDF")
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["grid.pdf"]  # no temporary file left


def test_a_figure_of_many_photos_shows_the_first_page_and_says_so(base, capsys, tmp_path):
    images = [base["data"] / "Images" / i for i in FeatureStore.open(base["store"]).ids[:30]]
    code, out, err = cli(capsys, "caption", *images, "--run", base["run"], "--figure", tmp_path / "grid.png")
    assert code == 0 and len(out.splitlines()) == 30 and "the first 24 of 30" in err
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_caption_takes_folders_and_explains_web_addresses(base, capsys, tmp_path):
    ids = FeatureStore.open(base["store"]).ids[:3]
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i, name in enumerate(ids):
        shutil.copy(base["data"] / "Images" / name, photos / ("sub" if i == 2 else "") / f"p{i}.jpg")
    (photos / "notes.txt").write_text("not a photo")
    (tmp_path / "empty").mkdir()
    code, out, err = cli(capsys, "caption", photos, "https://example.org/dog.jpg", "--run", base["run"])
    assert code == 3 and [line.split("\t")[0] for line in out.splitlines()] == \
        [str(photos / "p0.jpg"), str(photos / "p1.jpg"), str(photos / "sub" / "p2.jpg")]
    assert "https://example.org/dog.jpg: cannot caption: a web address: download the image first" in err
    code, out, err = cli(capsys, "caption", tmp_path / "empty", "--run", base["run"])
    assert code == 1 and "empty" in err and "no image files" in err and not out


def test_a_failed_atomic_write_names_the_file_asked_for_not_its_temporary_name(tmp_path):
    from captioning import atomic
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError) as e:
        atomic.write_text(tmp_path / "afile" / "out.json", "{}")
    assert e.value.filename == str(tmp_path / "afile" / "out.json")


@pytest.mark.parametrize("command", ["caption", "evaluate"])
@pytest.mark.parametrize("options,named", [
    (["--sample", "--beam", "3"], "not allowed with argument"), (["--temperature", "0.5"], "--temperature"),
    (["--beam", "3", "--top-k", "5"], "--top-k"), (["--seed", "2"], "--seed"), (["--greedy", "--rerank", "10"], "--rerank"),
    (["--no-rerank", "--matching", "0.5"], "--matching"), (["--no-rerank", "--rerank", "5"], "--no-rerank"),
    (["--greedy", "--sample"], "not allowed with argument"),
    (["--beam", "1", "--length-penalty", "1"], "--length-penalty"), (["--sample", "--rerank", "5"], "--rerank")])
def test_an_option_that_would_have_no_effect_is_refused(capsys, tmp_path, command, options, named):
    args = (["caption", tmp_path / "x.jpg"] if command == "caption" else
            ["evaluate", "--captions", tmp_path, "--features", tmp_path / "f.h5"])
    code, out, err = cli(capsys, *args, "--run", tmp_path / "no-run-needed", *options)
    assert code == 2 and named in err and not out  # refused before the (missing) run is even read


def test_options_that_do_apply_are_accepted(base, capsys):
    image = base["data"] / "Images" / FeatureStore.open(base["store"]).ids[0]
    for options in (["--beam", "3", "--rerank", "5", "--length-penalty", "1"],
                    ["--sample", "--temperature", "0.5", "--top-k", "5", "--seed", "1", "--rerank", "0"]):
        code, out, _ = cli(capsys, "caption", image, "--run", base["run"], *options)
        assert code == 0 and out.startswith(str(image)), options


def test_top_k_larger_than_the_vocabulary_is_a_usage_error(base, capsys):
    image = base["data"] / "Images" / FeatureStore.open(base["store"]).ids[0]
    code, _, err = cli(capsys, "caption", image, "--run", base["run"], "--sample", "--top-k", "100000")
    assert code == 2 and "--top-k" in err and "vocabulary size" in err


def test_min_count_that_leaves_no_words_is_a_usage_error(base, capsys, tmp_path):
    code, _, err = cli(capsys, "fit", "--captions", base["data"], "--features", base["store"], "--out",
                       tmp_path / "run", "--min-count", "1000000", *TINY)
    assert code == 2 and "--min-count" in err


def test_attention_figure_for_a_pooled_run_is_a_usage_error_before_any_work(base, capsys, tmp_path):
    code, out, err = cli(capsys, "caption", base["data"] / "Images" / "x.jpg", "--run", base["run"],
                         "--attention-figure", tmp_path / "a.png")
    assert code == 2 and "--attention-figure" in err and not out


def test_the_old_model_spelling_names_the_new_one(base, capsys):
    image = base["data"] / "Images" / FeatureStore.open(base["store"]).ids[0]
    code, out, err = cli(capsys, "caption", image, "--model", base["run"])
    assert code == 2 and "--model was renamed in 0.9: use --run RUN_DIR" in err and not out.strip()
