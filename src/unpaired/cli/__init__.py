"""The ``unpaired`` command: one module per subcommand, each with ``add_arguments`` and ``run``.

Every subcommand module in ``COMMANDS`` defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. User mistakes raise ``UserError`` anywhere below; they are printed
here as one line on stderr with exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import UserError

COMMANDS = ("train", "test", "demo", "import_official", "prepare_faces", "translate", "export", "eval", "plot", "serve")


class _Parser(argparse.ArgumentParser):
    """argparse whose bad-flag errors are UserErrors: one line naming the flag, exit code 2."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="unpaired", description="Unpaired image-to-image translation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{module_name}")
        cmd = sub.add_parser(module_name.replace("_", "-"), help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(handler=module.run)
    return parser



def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return args.handler(args) or 0
    except UserError as exc:
        print(f"unpaired: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unpaired: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
