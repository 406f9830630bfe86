"""Shared pieces of the command lines (`nsm`, `nsm-train`, `nsm-build`, `nsm-main`).

Option types that refuse bad values while parsing, so that every CLI reports them the same way:
one line `PROG: error: argument --opt: ...` after the subcommand's usage, exit code 2. Standard
library only.
"""

from __future__ import annotations

import argparse

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "int_at_least", "float_above",
           "package_version", "add_version", "prog_name", "HelpFormatter"]

# Exit codes of every command: 1 for bad data or a device error, 2 for a usage error.
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

DISTRIBUTION = "nsm-accel"


def int_at_least(low: int):
    """An argparse type: an integer >= `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def float_above(low: float):
    """An argparse type: a finite number > `low`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > low or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > {low:g}, got {text}")
        return value
    parse.__name__ = f"number > {low:g}"
    return parse


def prog_name(script: str, module: str) -> str:
    """How the user called the command: the console script's name, else `python -m module`."""
    import sys
    from pathlib import Path
    return script if Path(sys.argv[0]).name == script else f"python -m {module}"


def package_version() -> str:
    """The installed distribution's version ("unknown" when run from a bare checkout)."""
    from importlib import metadata
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s ({DISTRIBUTION} {package_version()})")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Defaults shown in --help (where an option has one and its help does not already say
    it), descriptions kept as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return text + " (default: %(default)s)"
