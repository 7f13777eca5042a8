"""The grammar of the ``veil`` command: ``veil NOUN VERB [arguments] [flags]``.

Every noun (``dataset``, ``query``, ``audit`` ...) holds verbs; every verb is a leaf that prints,
and takes ``--json`` for scripts unless its output is not a record (a shell script, a log).
A verb that contacts a node takes the connection flags (:mod:`.connection`), and no other verb
does. Installed packages add nouns and verbs through the same calls (:mod:`.plugins`).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, NoReturn

from .connection import add_connection_flags

Run = Callable[[argparse.Namespace], "int | None"]


class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported on one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


class Noun:
    """One noun of the tree; :meth:`verb` adds a leaf under it."""

    def __init__(self, name: str, subparsers: Any) -> None:
        self.name = name
        self.verbs: set[str] = set()
        self._verbs = subparsers

    def verb(self, name: str, run: Run, help: str, *, connects: bool = False, json: bool = True,
             key_bits: bool = False) -> argparse.ArgumentParser:
        """Add ``veil NOUN NAME``; ``connects``: it contacts a node (connection flags);
        ``json``: ``--json`` prints a JSON document instead of text; ``key_bits``: it uses the
        analyst's Paillier key pair."""
        p = self._verbs.add_parser(name, help=help, description=help)
        self.verbs.add(name)
        p.set_defaults(run=run, connects=connects)
        if json:
            p.add_argument("--json", action="store_true", help="print JSON instead of text")
        if connects:
            add_connection_flags(p, key_bits=key_bits)
        return p


class Commands:
    """The whole tree: ``veil`` and its nouns."""

    def __init__(self, parser: Parser) -> None:
        self.parser = parser
        self._nouns = parser.add_subparsers(dest="noun", metavar="NOUN", parser_class=Parser)
        self._nouns.required = True
        self._by_name: dict[str, Noun] = {}

    def noun(self, name: str, help: str) -> Noun:
        """The noun ``name``, created on first use (a plugin may add verbs to an existing noun)."""
        if name not in self._by_name:
            p = self._nouns.add_parser(name, help=help, description=help)
            verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
            verbs.required = True
            self._by_name[name] = Noun(name, verbs)
        return self._by_name[name]

    def verbs(self) -> dict[str, set[str]]:
        return {name: noun.verbs for name, noun in self._by_name.items()}

    def placeholder(self, name: str, help: str) -> None:
        """A noun listed in ``veil --help`` whose package is not installed."""
        self._nouns.add_parser(name, help=help, add_help=False)


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every ``(path, parser)`` of a verb under ``parser`` (used by tests and completion)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaves(child, path + (name,))


def fail(message: str) -> NoReturn:
    """Stop a verb with a one-line message (exit status 2), as for any refusal."""
    raise UsageError(message)


class UsageError(Exception):
    """What the user asked cannot be done as asked; the message says why."""


__all__ = ["Commands", "Noun", "Parser", "UsageError", "fail", "leaves"]
