"""Decoding recipes by name, as keras-hub names its samplers: ``decoding.get("recommended")``.

A ``Decoding`` is what a person chooses (greedy, beam search, sampling; re-ranked or not; widths and
weights); ``Decoding.search(captioner)`` builds the object that runs it (``search.Greedy``,
``search.BeamSearch``, ``search.RandomSampler`` or ``consensus.ConsensusRerank``). The CLI, the
``Captioner``, ``evaluate``, the demo, ``bench/`` and the notebooks all ask for recipes here, so the
recommended one and its defaults live in one place:

- ``recommended`` (the default everywhere): beam search of width 16 over the run's model and its
  model before self-critical tuning, re-ranked by the 40 nearest train images' consensus, the
  image–caption matcher and a little of beam search's own log-probability (docs/results.md).
- ``beam``: the same beam search, not re-ranked (about three times as fast);
- ``greedy``: the likeliest word at each step (fastest);
- ``sample``: random sampling (``temperature``, ``top_k``, ``seed``).
"""

from __future__ import annotations

import dataclasses
import math

from captioning.errors import UsageError

METHODS = ("greedy", "beam", "sample")
CANDIDATES = ("both", "model")
PRECISIONS = ("auto", "float32")
# how each option is spelled on the command line: messages name what the person typed
FLAGS = {"method": "--greedy/--sample", "beam": "--beam", "length_penalty": "--length-penalty",
         "rerank": "--rerank", "matching": "--matching", "likelihood": "--likelihood",
         "candidates": "--candidates", "proposer_precision": "--proposer-precision", "temperature": "--temperature", "top_k": "--top-k", "seed": "--seed"}
SAMPLING = ("temperature", "top_k", "seed")
RERANKING = ("matching", "likelihood", "candidates", "proposer_precision")


@dataclasses.dataclass(frozen=True)
class Decoding:
    """How a run turns image features into captions. The field defaults are the recommended recipe."""

    method: str = "beam"  # greedy | beam | sample
    beam: int = 16  # beam width
    length_penalty: float = 0.7  # beam: finished captions ranked by log p / length**length_penalty
    rerank: int = 40  # beam: re-rank by the consensus of this many nearest train images (0: off)
    matching: float = 1.0  # re-ranking: weight of the image–caption matcher (0: consensus alone)
    likelihood: float = 0.02  # re-ranking: weight of beam search's log-probability
    candidates: str = "both"  # re-ranking: captions of model.keras and cross_entropy.keras, or model's alone
    # re-ranking: cross_entropy.keras's search computes in bfloat16/float16 where that is faster here
    # ("auto": 1.5× on CPUs with AVX512-BF16; its candidates are only proposals), or in "float32"
    proposer_precision: str = "auto"
    temperature: float = 1.0  # sample
    top_k: int = 0  # sample: among the k likeliest words (0: all)
    seed: int = 0  # sample

    @property
    def reranked(self) -> bool:
        return self.method == "beam" and self.rerank > 0

    def describe(self) -> str:
        """In words, for summaries and figure titles: 'beam 16 + re-ranking'."""
        if self.method == "greedy":
            return "greedy"
        if self.method == "sample":
            top = f", top-{self.top_k}" if self.top_k else ""
            return f"sampling (temperature {self.temperature:g}{top}, seed {self.seed})"
        return f"beam {self.beam}" + (" + re-ranking" if self.reranked else "")

    def settings(self) -> dict:
        """The options this recipe reads, for eval.json and a run's description."""
        keys = {"greedy": (), "sample": SAMPLING, "beam": ("beam", "length_penalty", "rerank")}[self.method]
        keys += RERANKING if self.reranked else ()
        return {"decoding": self.describe(), "method": self.method, **{k: getattr(self, k) for k in keys}}

    def search(self, captioner):
        """The object that decodes this way for ``captioner`` (a ``Captioner``). A run that lacks what
        re-ranking needs decodes with plain beam search, and ``captioner.notes`` says so."""
        from captioning.inference.search import BeamSearch, Greedy, RandomSampler
        if self.method == "greedy":
            return Greedy()
        if self.method == "sample":
            if self.top_k > len(captioner.vocab):
                raise UsageError(f"--top-k must be at most the vocabulary size ({len(captioner.vocab)}); "
                                 f"got {self.top_k}")
            return RandomSampler(self.temperature, self.top_k, self.seed)
        beam = BeamSearch(self.beam, self.length_penalty)
        if not self.reranked:
            return beam
        return captioner.reranked(beam, self.rerank, self.matching, self.candidates, self.likelihood,
                                  self.proposer_precision)


RECOMMENDED = Decoding()
PRESETS = {
    "recommended": RECOMMENDED,
    "beam": dataclasses.replace(RECOMMENDED, rerank=0),
    "greedy": Decoding(method="greedy"),
    "sample": Decoding(method="sample"),
}


def names() -> list:
    return list(PRESETS)


def get(spec="recommended", **options) -> Decoding:
    """A recipe: a preset's name, a ``Decoding``, or a dict of its fields; ``options`` change
    fields of it. Options that the resulting recipe would not read are refused (``UsageError``), as
    are values out of range: a person who typed ``--temperature`` without sampling learns it did
    nothing. ``beam`` of 0 or 1 means greedy."""
    if isinstance(spec, Decoding):
        base = spec
    elif isinstance(spec, dict):
        base, options = RECOMMENDED, {**spec, **options}
    elif spec in PRESETS:
        base = PRESETS[spec]
    else:
        raise UsageError(f"unknown decoding {spec!r}: choose one of {', '.join(PRESETS)}, or give a dict of "
                         f"Decoding's fields")
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(Decoding)})
    if unknown:
        raise UsageError(f"unknown decoding option {unknown[0]!r}: the options are "
                         f"{', '.join(f.name for f in dataclasses.fields(Decoding))}")
    if options.get("method") == "sample" and options.get("beam", 0) > 1:
        raise UsageError("--sample and --beam are two ways to decode; give one of them")
    if "beam" in options and "method" not in options and base.method != "sample":
        options["method"] = "beam" if options["beam"] > 1 else "greedy"
    recipe = dataclasses.replace(base, **options)
    _check_ranges(recipe)
    _refuse_options_without_effect(recipe, options)
    return recipe


def _check_ranges(d: Decoding) -> None:
    def need(ok, field, rule):
        if not ok:
            raise UsageError(f"{FLAGS[field]} {getattr(d, field)} is out of range: must be {rule}")
    need(d.method in METHODS, "method", f"one of {', '.join(METHODS)}")
    need(d.candidates in CANDIDATES, "candidates", f"one of {', '.join(CANDIDATES)}")
    need(d.proposer_precision in PRECISIONS, "proposer_precision", f"one of {', '.join(PRECISIONS)}")
    for field in ("beam", "rerank", "top_k"):
        need(isinstance(getattr(d, field), int) and getattr(d, field) >= 0, field, "an integer ≥ 0")
    for field in ("length_penalty", "matching", "likelihood"):
        need(math.isfinite(getattr(d, field)) and getattr(d, field) >= 0, field, "a finite number ≥ 0")
    need(math.isfinite(d.temperature) and d.temperature > 0, "temperature", "a finite number > 0")
    need(isinstance(d.seed, int) and 0 <= d.seed < 2 ** 32, "seed", "an integer ≥ 0 and < 2**32")


def _refuse_options_without_effect(d: Decoding, given: dict) -> None:
    def refuse(field, needs):
        raise UsageError(f"{FLAGS[field]} has no effect without {needs}; add it or leave {FLAGS[field]} out")
    for field in SAMPLING:
        if field in given and d.method != "sample":
            refuse(field, "--sample")
    if "length_penalty" in given and d.method != "beam":
        refuse("length_penalty", "beam search (--beam K, K ≥ 2)")
    if given.get("rerank") and d.method != "beam":
        refuse("rerank", "beam search (--beam K, K ≥ 2)")
    if "proposer_precision" in given and d.reranked and d.candidates != "both":
        refuse("proposer_precision", "--candidates both (the second search it sets)")
    on = {"matching": d.matching, "likelihood": d.likelihood, "candidates": True,  # --matching 0: off anyway
          "proposer_precision": True}
    for field in RERANKING:
        if field in given and on[field] and not d.reranked:
            if d.method != "beam":
                refuse(field, "beam search (--beam K, K ≥ 2)")
            raise UsageError(f"{FLAGS[field]} is a re-ranking option, and --rerank 0 (or --no-rerank) turns "
                             f"re-ranking off: give --rerank N (N ≥ 1) or leave {FLAGS[field]} out")


def label(search) -> str:
    """What a search object really does, in words (a re-ranking recipe on a run without its files
    runs as plain beam search, and says so here)."""
    d = search.describe()
    if d["search"] == "sample":
        return Decoding(method="sample", temperature=d["temperature"], top_k=d["top_k"], seed=d["seed"]).describe()
    return d["search"] + (f" {d['k']}" if "k" in d else "") + (" + re-ranking" if "rerank" in d else "")
