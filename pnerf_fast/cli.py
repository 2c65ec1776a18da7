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
    order = ["demo", "align", "lightstage", "pretrain", "finetune", "render", "eval", "info"]
    mods.sort(key=lambda m: (order.index(m.NAME) if m.NAME in order else len(order), m.NAME))
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pnerf",
        description="pnerf_fast: portrait neural radiance fields from a single image.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"pnerf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pnerf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
