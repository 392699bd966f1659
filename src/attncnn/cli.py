"""The `attncnn` command line: parses arguments and calls one function per command.

Each command lives in `attncnn.commands.<name>` and defines `HELP`, `add_arguments(parser)`
and `run(args) -> int`. Heavy imports (torch, data) happen inside `run`, so `--help` is quick.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from attncnn.errors import AttncnnError

COMMANDS = ("train", "sweep", "eval", "predict", "explain", "bench", "export", "publish",
            "report", "models", "pretrained")


def _commands():
    for name in COMMANDS:
        yield name, importlib.import_module(f"attncnn.commands.{name.replace('-', '_')}")


def build_parser() -> argparse.ArgumentParser:
    from attncnn import __version__

    parser = argparse.ArgumentParser(
        prog="attncnn", description="Attention-based CNNs: train, evaluate, explain, export."
    )
    parser.add_argument("--version", action="version", version=f"attncnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in _commands():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except AttncnnError as err:
        print(f"attncnn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attncnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `attncnn models | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
