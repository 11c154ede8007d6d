"""Packages whose names load on first use (PEP 562), so ``import captioning.training`` — and the
CLI's ``--help`` — does not import Keras until something of Keras is asked for."""

from __future__ import annotations

import importlib


def exports(package: str, table: dict) -> tuple:
    """``(__getattr__, __dir__, __all__)`` for a package whose name N lives in module ``table[N]``."""
    def __getattr__(name):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(table[name]), name)

    def __dir__():
        return sorted(table)
    return __getattr__, __dir__, sorted(table)
