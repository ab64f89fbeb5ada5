"""``beamsteer``: one command line for the service, the worker, the models and the clients.

Subcommands register themselves from their own packages; each imports its heavy
dependencies only when it runs, so ``beamsteer --help`` works with the bare install.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Modules that provide ``register(subparsers)``; a missing optional package just hides them.
_COMMANDS = ("server.cli", "server.db_cli", "server.keys_cli", "server.worker_cli", "models.cli",
             "clients.cli.experiments", "clients.cli.steer", "clients.cli.data",
             "clients.cli.simulate")


def _quiet_threads() -> None:
    """Thread settings that torch/OpenBLAS read at import (DESIGN.md: spinning OpenMP
    barriers and 2-thread OpenBLAS were erratic on small hosts). User values win."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="beamsteer",
        description="Autonomous experiments at scattering beamlines. The client commands' "
                    "options (--url, --api-key, --timeout, --json) may come before the "
                    "command too.")
    from server import __version__

    parser.add_argument("--version", action="version", version=f"beamsteer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.register(sub)
    return parser


# The client subcommands' shared options (clients.cli._common.client_options) and how many
# values each takes: given before the subcommand, they are moved after it.
_CLIENT_OPTIONS = {"--url": 1, "--api-key": 1, "--timeout": 1, "--json": 0}


def hoist_client_options(argv: Sequence[str]) -> list[str]:
    """``--url X experiments list`` -> ``experiments list --url X``: argparse reads the
    client options only after the (sub)subcommand that shares them."""
    rest, moved = list(argv), []
    while rest and rest[0].startswith("-"):
        name, eq, _ = rest[0].partition("=")
        if name not in _CLIENT_OPTIONS:
            break  # --help, --version: the top level's own
        n = 1 + (0 if eq else _CLIENT_OPTIONS[name])
        moved += rest[:n]
        del rest[:n]
    return rest + moved


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    _quiet_threads()
    parser = build_parser()
    args = parser.parse_args(hoist_client_options(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
