"""Caption cleaning and tokenisation.

The options are a small JSON-serialisable dataclass that is saved with every vocabulary, so
inference months later cleans text exactly the way training did.
"""

from __future__ import annotations

import dataclasses
import re
import string

START_TOKEN = "startseq"
END_TOKEN = "endseq"

# Whole-word contractions first (irregular forms), then the regular suffixes.
_CONTRACTIONS = {
    "can't": "can not", "won't": "will not", "shan't": "shall not", "ain't": "is not",
    "let's": "let us", "it's": "it is", "that's": "that is", "there's": "there is",
    "here's": "here is", "what's": "what is", "who's": "who is", "he's": "he is",
    "she's": "she is", "where's": "where is",
}
_SUFFIXES = [("n't", " not"), ("'re", " are"), ("'ve", " have"), ("'ll", " will"),
             ("'d", " would"), ("'m", " am")]
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_HAS_DIGIT = re.compile(r"\d")


@dataclasses.dataclass(frozen=True)
class CleaningOptions:
    """How raw captions become tokens. Defaults follow the common Flickr8k tutorials."""

    lowercase: bool = True
    expand_contractions: bool = True
    strip_punctuation: bool = True
    drop_numeric: bool = True  # tokens containing any digit
    drop_single_letters: bool = True  # one-letter tokens except "a"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "CleaningOptions":
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown cleaning options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def _expand(text: str) -> str:
    words = []
    for word in text.split():
        low = word.lower()
        if low in _CONTRACTIONS:
            word = _CONTRACTIONS[low]
        else:
            for suffix, repl in _SUFFIXES:
                if low.endswith(suffix) and len(low) > len(suffix):
                    word = word[: -len(suffix)] + repl
                    break
            else:
                if low.endswith("'s"):  # possessive: "dog's" → "dog"
                    word = word[:-2]
        words.append(word)
    return " ".join(words)


def tokenize(caption: str, options: CleaningOptions = CleaningOptions()) -> list[str]:
    """Clean one caption and split it into word tokens (no start/end tokens)."""
    text = caption.translate(_APOSTROPHES)
    if options.lowercase:
        text = text.lower()
    if options.expand_contractions:
        text = _expand(text)
    if options.strip_punctuation:
        # Hyphens and slashes join words ("tri-colored"); elsewhere punctuation just goes.
        text = text.replace("-", " ").replace("/", " ").translate(_PUNCTUATION)
    tokens = text.split()
    if options.drop_numeric:
        tokens = [t for t in tokens if not _HAS_DIGIT.search(t)]
    if options.drop_single_letters:
        tokens = [t for t in tokens if len(t) > 1 or t.lower() == "a"]
    return tokens


def clean(caption: str, options: CleaningOptions = CleaningOptions()) -> str:
    """The cleaned caption as one space-separated string."""
    return " ".join(tokenize(caption, options))


def with_markers(tokens: list[str]) -> list[str]:
    return [START_TOKEN, *tokens, END_TOKEN]
