"""The ``pnerf`` command. Each subcommand lives in its own module in
``pnerf_fast/commands/``; a module defines ``NAME``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when listed here, so importing
the CLI stays cheap and never compiles anything."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands as _commands_pkg


def _command_modules():
    mods = []
    for info in sorted(pkgutil.iter_modules(_commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{_commands_pkg.__name__}.{info.name}"))
    order = ["demo", "align", "lightstage", "pretrain", "finetune", "render", "export", "view", "eval", "info"]
    mods.sort(key=lambda m: (order.index(m.NAME) if m.NAME in order else len(order), m.NAME))
    return mods


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``pnerf render: error: argument --res: ...`` and
    exit code 2 (the usage is one ``--help`` away)."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pnerf",
        description="pnerf_fast: portrait neural radiance fields from a single image.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv=None) -> int:
    """Run ``pnerf ARGV``; -> the exit code. Bad input (an argument, a file, a config) is
    one line on stderr and exit code 2, never a traceback."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
            PermissionError, RecursionError) as e:
        print(f"pnerf {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable or vanished output, a full disk, ...
        where = f"{e.filename}: " if getattr(e, "filename", None) and str(e.filename) not in str(e) else ""
        print(f"pnerf {args.command}: error: {where}{_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pnerf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
