"""What the command modules share: the help formatter, value types, the run and image arguments."""

from __future__ import annotations

import argparse

from captioning.errors import CaptioningError
from captioning.options import ranged  # noqa: F401  (the command modules' numeric types)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every default shown, except where there is none to show (None, an unset flag) or the help
    already says it in words."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def figure_path(text):
    from captioning.figures import figure_path as check
    try:
        return check(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def backbone_name(text):
    """A keras.applications name, spelled as the package knows it, a ``.keras`` model's path or hub:PRESET."""
    from captioning.features.backbones import get_backbone
    from captioning.features.backbones import external
    if external(text):
        return text
    try:
        return get_backbone(text).name
    except CaptioningError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Renamed(argparse.Action):
    """An option spelled differently before 0.9: refused with the new spelling named."""

    def __init__(self, option_strings, dest, instead: str = "", **kwargs):
        self.instead = instead
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed in 0.9: use {self.instead}")


def add_run_option(p):
    p.add_argument("--run", metavar="RUN_DIR", action="append", required=True,
                   help="the run folder written by `captioning fit`; give it more than once to caption with an "
                        "ensemble of runs trained on the same captions")
    p.add_argument("--model", action=Renamed, instead="--run RUN_DIR")
    p.add_argument("--allow-partial", action="store_true",
                   help="caption with a run that `fit` is writing now, or that a killed fit left half saved")


def image_files(args) -> list:
    """The IMAGE arguments with each folder replaced by the images in it (and below), in a stable order."""
    from pathlib import Path

    from captioning.features.extract import list_images
    paths = []
    for arg in args:
        folder = Path(arg)
        if not folder.is_dir():
            paths.append(arg)
            continue
        found = [str(folder / i) for i in list_images(folder)]
        if not found:
            raise CaptioningError(f"{folder}: a folder with no image files in it (looked for the usual photo "
                                  "suffixes, .jpg .png …, in it and below)")
        paths += found
    return paths


__all__ = ["HelpFormatter", "figure_path", "backbone_name", "Renamed", "add_run_option", "image_files", "ranged"]
