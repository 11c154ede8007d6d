"""``captioning`` command line: each subcommand is a thin shell over one library function, in the
module of its stage beside its options (``data``, ``features``, ``fit``, ``captions``, ``export``, ``serve``, ``demo``).
Nothing here imports Keras: ``--help`` and ``--version`` answer at once.

Exit codes: 0 success; 1 a problem explained on stderr (bad input, missing weights, …);
2 wrong usage; 3 finished but some items failed (``extract-features --strict``, ``caption``);
130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import functools
import os
import sys

from captioning import __version__, backend, interrupt
from captioning.cli import captions, data, demo, export, features, fit, serve
from captioning.cli.common import HelpFormatter
from captioning.errors import CaptioningError, UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CLOSED_PIPE = 141  # what a shell reports for a program stopped by SIGPIPE, as `yes | head` is


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter,
        prog="captioning", description="Image captioning with Keras: cached CNN features, "
        "merge/inject/attention decoders, beam search with re-ranking, BLEU and COCO metrics.")
    parser.add_argument("--version", action="version", version=f"captioning {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's log output and tracebacks")
    common = argparse.ArgumentParser(add_help=False)  # so `captioning fit ... --verbose` works too
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show TensorFlow's log output and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add = functools.partial(sub.add_parser, formatter_class=HelpFormatter, parents=[common])
    for stage in (data, features, fit, captions, export, serve, demo):  # the pipeline's order, as `--help` lists them
        stage.add_commands(add)
    return parser


def _unknown_options(parser, args, extra: list) -> None:
    """argparse reports a subcommand's unknown option with the top-level usage; name the command,
    show its usage and point at the option the user probably meant."""
    command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    known = [s for a in command._actions for s in a.option_strings]
    hints = []
    for token in (t.split("=", 1)[0] for t in extra if t.startswith("-")):
        names = {k.lstrip("-"): k for k in known}  # the dashes alone would make any two options look alike
        near = [names[n] for n in difflib.get_close_matches(token.lstrip("-"), names, n=1, cutoff=0.6)] or \
            [k for k in known if len(token) == 2 and k.startswith("-" + token)][:1]
        hints += [f"{near[0]} instead of {token}"] if near else []
    hint = f" (did you mean {' and '.join(hints)}?)" if hints else ""
    command.error(f"unrecognized arguments: {' '.join(extra)}{hint}; see `captioning {args.command} --help`")


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown_options(parser, args, extra)
    backend.configure(args.verbose)
    previous = interrupt.install()
    try:
        code = args.func(args)
    except UsageError as e:
        print(f"captioning {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CaptioningError as e:
        print(f"captioning {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `captioning caption DIR | head -3`: the reader took what it wanted; no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush has nowhere to fail
        return EXIT_CLOSED_PIPE
    except OSError as e:  # read-only folders, a full disk, a path that is a folder or a file
        if args.verbose:
            raise
        out = getattr(args, "out", None)
        where = f"{e.filename}: " if e.filename else (f"writing {out}: " if out and e.errno == errno.ENOSPC else "")
        print(f"captioning {args.command}: error: {where}{e.strerror or e}. Check that the path exists, is "
              "writable and that the disk has space; nothing finished was lost. Run again with --verbose "
              "for the traceback.", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"\ncaptioning {args.command}: interrupted; finished work is kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        interrupt.uninstall(previous)  # main() called in a process that goes on (a notebook, the tests)
    return EXIT_OK if code is None else code
