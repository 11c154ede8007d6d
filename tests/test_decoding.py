"""Decoding recipes by name: one home for the recommended recipe and its defaults, and the checks of
options that would have no effect (the CLI's and the library's alike)."""

import pytest

from captioning.errors import UsageError
from captioning.inference import decoding


def test_the_presets_and_their_words():
    assert decoding.names() == ["recommended", "beam", "greedy", "sample"]
    assert decoding.get().describe() == "beam 16 + re-ranking" and decoding.get() == decoding.RECOMMENDED
    assert decoding.get("beam").describe() == "beam 16" and not decoding.get("beam").reranked
    assert decoding.get("greedy").describe() == "greedy"
    assert decoding.get("sample", temperature=0.5).describe() == "sampling (temperature 0.5, seed 0)"
    assert decoding.get("recommended").settings() == {
        "decoding": "beam 16 + re-ranking", "method": "beam", "beam": 16, "length_penalty": 0.7, "rerank": 40,
        "matching": 1.0, "likelihood": 0.02, "candidates": "both", "proposer_precision": "auto"}


def test_options_change_one_part_and_a_beam_of_one_is_greedy():
    assert decoding.get({"beam": 5}) == decoding.get("recommended", beam=5)
    assert decoding.get({"beam": 5}).describe() == "beam 5 + re-ranking"
    assert decoding.get("recommended", beam=1).method == "greedy" == decoding.get("recommended", beam=0).method
    assert decoding.get("greedy", beam=3).describe() == "beam 3 + re-ranking"
    assert decoding.get("recommended", rerank=0) == decoding.get("beam")


@pytest.mark.parametrize("spec, options, says", [
    ("recommended", {"temperature": 0.5}, "--temperature has no effect without --sample"),
    ("greedy", {"length_penalty": 1.0}, "--length-penalty has no effect"),
    ("greedy", {"matching": 2.0}, "--matching has no effect"),
    ("beam", {"likelihood": 0.1}, "--likelihood is a re-ranking option"),
    ("recommended", {"method": "sample", "beam": 4}, "two ways to decode"),
    ("recommended", {"beam": -1}, "--beam -1 is out of range"),
    ("recommended", {"matching": float("nan")}, "--matching nan is out of range"),
    ("sample", {"temperature": 0.0}, "--temperature 0.0 is out of range"),
    ("sample", {"seed": 2 ** 32}, "--seed 4294967296 is out of range"),
    ("recommended", {"candidates": "all"}, "--candidates all is out of range"),
    ("nonsense", {}, "unknown decoding 'nonsense'"),
    ("recommended", {"width": 3}, "unknown decoding option 'width'"),
])
def test_what_would_do_nothing_or_is_out_of_range_is_refused(spec, options, says):
    with pytest.raises(UsageError, match=says.replace("(", r"\(")):
        decoding.get(spec, **options)


def test_matching_zero_without_reranking_is_accepted_as_off():
    assert decoding.get("beam", matching=0.0).describe() == "beam 16"
