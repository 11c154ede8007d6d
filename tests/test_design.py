"""The house rules a maintainer can walk: imports run one way, the CLI answers at once, every link
in README and docs/ resolves, and the README's commands name real options."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "captioning"


def _imports(path: Path) -> set:
    """Every ``captioning...`` module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("captioning")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("captioning"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def _modules(package: str) -> dict:
    return {p: _imports(p) for p in (PACKAGE / package).rglob("*.py")}


@pytest.mark.parametrize("below, above", [
    ("metrics", ("data", "features", "decoders", "training", "inference", "evaluation", "export", "serve", "cli",
                 "run")),
    ("inference", ("training", "evaluation", "export", "serve", "cli")),
    ("training", ("evaluation", "export", "serve", "cli")),  # fit writes what inference reads (search, re-ranking)
    ("decoders", ("training", "inference", "evaluation", "export", "serve", "cli", "run")),
    ("data", ("features", "training", "inference", "evaluation", "export", "serve", "cli")),
    ("export", ("training", "evaluation", "serve", "cli")),  # export reads a finished run through inference
    ("serve", ("training", "evaluation", "export", "cli")),
])
def test_no_import_runs_back_up(below, above):
    for path, imported in _modules(below).items():
        upward = sorted(m for m in imported if "." in m and m.split(".")[1] in above)
        assert not upward, f"{path.relative_to(ROOT)} imports {upward}: {below} sits below {', '.join(above)}"


_LIGHT = """
import runpy, sys
sys.argv = ["captioning", *sys.argv[1:]]
try:
    runpy.run_module("captioning", run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in ("keras", "tensorflow", "jax", "matplotlib") if m in sys.modules)
print("HEAVY", heavy, file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["fit", "--help"], ["caption", "--help"],
                                  ["evaluate", "--help"], ["extract-features", "--help"], ["export", "--help"], ["serve", "--help"],
                                  ["demo", "--help"]])
def test_the_cli_answers_help_and_version_without_loading_keras(args):
    done = subprocess.run([sys.executable, "-c", _LIGHT, *args], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in done.stderr, done.stderr[-2000:]
    assert done.stdout.strip(), "nothing printed"


def _documents():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_in_readme_and_docs_resolves():
    broken = []
    for doc in _documents():
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                broken.append(f"{doc.relative_to(ROOT)} → {target}")
    assert not broken, broken


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    first_screens = "\n".join(text.splitlines()[:120])
    for must in ("pip install -e .", "captioning demo", "pytest", "captioning caption", "Captioner.load"):
        assert must in first_screens, must
    assert not re.search(r"\.\./shared|project's machines|lent for", "".join(d.read_text() for d in _documents()))


def test_the_readmes_commands_name_real_options():
    from captioning.cli import build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    text = "\n".join(d.read_text() for d in [ROOT / "README.md", ROOT / "docs" / "cli.md"])
    checked = 0
    for line in re.findall(r"captioning ([a-z-]+)((?: [^`|\n]*)?)", text):
        command, rest = line
        if command not in commands:
            continue
        known = {s for a in commands[command]._actions for s in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            assert option in known | {"--help"}, f"`captioning {command}` has no {option}"
            checked += 1
    assert checked > 20
