"""Options declared once: a dataclass field carries its command-line help, range and choices, and
both the library's ``validate`` and the CLI's parser are made from it (self-critical.pytorch's
option groups, as dataclass metadata).

    units: int = option(512, "RNN state size", low=1)

``check(obj)`` refuses a value outside its field's range with the option named as the command line
spells it; ``add_arguments(parser, cls)`` adds one ``--flag`` per field, whose parse step applies the
same range, so ``captioning fit --units 0`` and ``FitOptions(units=0).validate()`` say the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from captioning.errors import UsageError


def option(default=dataclasses.MISSING, help: str = "", *, low=None, high=None, low_open=False, high_open=False,
           choices=None, metavar=None, flag: bool = True, default_factory=dataclasses.MISSING, show_default=True):
    """A dataclass field with what the command line and ``check`` need to know about it.
    ``flag=False``: a field of the library only (no command-line option)."""
    meta = {"help": help, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "choices": choices, "metavar": metavar, "flag": flag, "show_default": show_default}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def out_of_range(value, meta: dict, typed: str | None = None) -> str | None:
    """Why ``value`` (as ``typed`` on the command line, if it was) is outside the field's range or
    choices, or None."""
    choices = meta.get("choices")
    if choices is not None:
        return None if value in choices else f"{value!r} is not one of {', '.join(map(str, choices))}"
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None or value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{typed or value} is not a finite number"
    below = low is not None and (value <= low if meta["low_open"] else value < low)
    above = high is not None and (value >= high if meta["high_open"] else value > high)
    if not (below or above):
        return None
    rule = [f"{'>' if meta['low_open'] else '≥'} {low}"] if low is not None else []
    rule += [f"{'<' if meta['high_open'] else '≤'} {high}"] if high is not None else []
    return f"{typed or value} is out of range: must be {' and '.join(rule)}"


def check(obj) -> None:
    """Raise ``UsageError`` for the first field of ``obj`` outside its declared range."""
    for f in dataclasses.fields(obj):
        why = out_of_range(getattr(obj, f.name), f.metadata) if f.metadata else None
        if why:
            raise UsageError(f"{flag_of(f.name)}: {why}")


def ranged(kind, low=None, high=None, low_open=False, high_open=False, what=""):
    """An argparse type that refuses values outside [low, high] (either end open) with the range named."""
    return _parse(kind, {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "what": what})


def _parse(kind, meta):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        why = out_of_range(value, {**meta, "choices": None}, text)
        if why:
            raise argparse.ArgumentTypeError(why + meta.get("what", ""))
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_arguments(parser, cls, skip=(), defaults=None) -> None:
    """One ``--flag`` per field of ``cls`` with ``flag`` metadata (booleans as --x/--no-x), the
    field's help, choices, range and default; every default is None, so ``namespace_options``
    passes on only what was typed (and ``defaults`` overrides what the help shows)."""
    base = {**{f.name: f.default for f in dataclasses.fields(cls)}, **(defaults or {})}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("flag") or f.name in skip:
            continue
        shown = base.get(f.name)
        text = meta["help"]
        if meta.get("show_default", True) and not any(shown is x for x in (None, False, dataclasses.MISSING)):
            text += f" (default: {shown})"
        kwargs = dict(default=None, help=text)
        kind = type(shown) if isinstance(shown, (int, float)) and not isinstance(shown, bool) else None
        if isinstance(shown, bool) or f.type in ("bool", "bool | None"):
            parser.add_argument(flag_of(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        elif kind is not None or meta.get("low") is not None:
            kwargs["type"] = _parse(kind or (float if "float" in str(f.type) else int), meta)
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(flag_of(f.name), **kwargs)


def namespace_options(namespace, cls) -> dict:
    """The fields of ``cls`` that were typed on the command line (their parsed values)."""
    names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("flag")}
    return {k: v for k, v in vars(namespace).items() if k in names and v is not None}
