"""Nouns and verbs other installed packages add to the ``veil`` command (entry points).

Each entry point of the group ``veil.cli`` names a ``register(cli)`` function that adds to the
tree through :class:`veil.cli.command.Commands` (``cli.noun(...).verb(...)``). ``veil-server``
adds ``node`` and ``token`` (and ``audit dump``). Without it, ``veil node ...`` and
``veil token ...`` say how to install it.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

from .command import Commands

GROUP = "veil.cli"
NODE_NOUNS = {"node": "run and set up a node (data owner / operator)",
              "token": "issue, revoke and list signed bearer tokens (operator)"}
INSTALL_SERVER = "pip install veil-server"


def add_plugins(cli: Commands) -> set[str]:
    """Register every installed plugin; return the node nouns no plugin provided."""
    provided = set()
    for ep in entry_points(group=GROUP):
        try:
            ep.load()(cli)
        except Exception as e:  # a broken plugin must not take the analyst's verbs down with it
            print(f"veil: the {ep.name!r} commands of {ep.value} could not be loaded: {e}", file=sys.stderr)
            continue
        provided.add(ep.name)
    missing = set(NODE_NOUNS) - provided
    for noun in sorted(missing):
        cli.placeholder(noun, f"{NODE_NOUNS[noun]} [needs veil-server]")
    return missing


def missing_noun(argv: list[str], missing: set[str]) -> str | None:
    """The node noun ``argv`` asks for when veil-server is not installed, else None."""
    noun = next((a for a in argv if not a.startswith("-")), None)
    return noun if noun in missing else None


def report_missing(noun: str) -> int:
    print(f"veil {noun}: the node's commands come with veil-server, which is not installed here: "
          f"{INSTALL_SERVER}", file=sys.stderr)
    return 2
