"""Stage 0: captions in, one table and a vocabulary out."""

from captioning.data.formats import FORMATS, SPLITS, CaptionDataset, detect_format, load_captions
from captioning.data.sample import make_sample
from captioning.data.summary import summarize
from captioning.data.text import END_TOKEN, START_TOKEN, CleaningOptions, clean, tokenize
from captioning.data.vocab import Vocabulary, max_caption_length

__all__ = ["FORMATS", "SPLITS", "CaptionDataset", "detect_format", "load_captions", "make_sample",
           "summarize", "END_TOKEN", "START_TOKEN", "CleaningOptions", "clean", "tokenize",
           "Vocabulary", "max_caption_length"]
