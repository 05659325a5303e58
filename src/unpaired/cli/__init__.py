"""The ``unpaired`` command: one module per subcommand, each with ``HELP``, ``add_arguments`` and ``run``.

Every subcommand module in ``COMMANDS`` defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``; a module that parses its own options in a second pass (``train``:
the chosen model's options) sets ``PASS_THROUGH = True`` and gets ``run(args, rest)``. CLI
modules only parse arguments and call the library. User mistakes raise ``UserError`` anywhere below; they are printed here
as one line on stderr with exit code 2, without a traceback. Anything else is a bug: its
traceback is printed, marked as one to report.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from .. import __version__
from ..errors import UserError

COMMANDS = ("train", "test", "demo", "import_official", "prepare_faces", "translate", "export", "eval", "plot", "serve")


class Parser(argparse.ArgumentParser):
    """argparse whose bad-flag errors are UserErrors: one line naming the flag, exit code 2."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = Parser(prog="unpaired", description="Unpaired image-to-image translation.")
    parser.add_argument("--version", action="version", version=f"unpaired {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    modules = {}
    for module_name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{module_name}")
        name = module_name.replace("_", "-")
        through = getattr(module, "PASS_THROUGH", False)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP, add_help=not through,
                             allow_abbrev=not through)
        module.add_arguments(cmd)
        modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser, modules = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, rest = parser.parse_known_args(argv)
        module = modules.get(args.command)
        if module is None:
            if rest:  # `unpaired --bogus`: an error naming the flag, not a page of help
                raise UserError(f"unrecognized arguments: {' '.join(rest)} (see unpaired --help)")
            parser.print_help()
            return 2
        if getattr(module, "PASS_THROUGH", False):
            return module.run(args, rest) or 0
        if rest:
            raise UserError(f"unrecognized arguments: {' '.join(rest)} (see unpaired {args.command} --help)")
        return module.run(args) or 0
    except UserError as exc:
        print(f"unpaired: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unpaired: interrupted", file=sys.stderr)
        return 130
    except Exception:  # not a user's mistake: a bug, shown in full so that it can be reported
        traceback.print_exc()
        print("unpaired: internal error: this is a bug in unpaired, not in your input; please report it "
              "with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
