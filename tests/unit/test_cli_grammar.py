"""The whole ``veil`` command tree, walked: one grammar everywhere.

Every leaf is ``veil NOUN VERB``, answers ``--help``, takes ``--json`` where it prints a record,
and takes the connection flags exactly where it contacts a node. Usage mistakes are one line.
The node's nouns come from veil-server's entry points (installed here); without them, ``veil
node`` says how to install it.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from veil.cli import build_parser, main
from veil.cli import plugins
from veil.cli.aliases import modernise
from veil.cli.command import leaves
from veil.cli.connection import FLAGS

# The verbs that contact a node. Everything else works on local files (verify, completion, the
# operator's node commands reading veil.toml) and must not take connection flags.
ONLINE = {
    ("dataset", v) for v in ("list", "show", "register", "submit", "approve", "reject", "suspend", "resume",
                             "delist", "versions")
} | {("query", v) for v in ("submit", "status", "result", "cancel", "list", "explain")} | {
    ("audit", "list"), ("audit", "export"), ("audit", "checkpoint"), ("audit", "key"), ("receipt", "get"),
    ("grant", "add"), ("grant", "list"), ("grant", "revoke"), ("review", "list"), ("review", "show"),
    ("review", "approve"), ("review", "reject"), ("cert", "get"), ("usage", "report"), ("budget", "show"),
    ("node", "health"),
    ("model", "fit"), ("model", "list"), ("model", "reviews"), ("model", "approve"), ("model", "reject"),  # issue 18
}
OFFLINE = {("audit", "verify"), ("receipt", "verify"), ("cert", "verify"), ("completion", "bash"),
           ("completion", "zsh"), ("node", "init"), ("node", "serve"), ("node", "check"), ("token", "issue"), ("token", "revoke"),
           ("token", "list"), ("audit", "dump"), ("node", "recover"), ("witness", "init"), ("witness", "serve"),
           ("witness", "key"), ("node", "subject-code")}
# Leaves whose output is not a record: a shell script, and a running node's log.
NO_JSON = {("completion", "bash"), ("completion", "zsh"), ("node", "serve"), ("witness", "init"), ("witness", "serve"),
           ("witness", "key")}

PARSER = build_parser()
TREE = dict(leaves(PARSER))


def _options(p: argparse.ArgumentParser) -> set[str]:
    return {o for a in p._actions for o in a.option_strings}


def test_every_leaf_is_a_noun_and_a_verb() -> None:
    assert set(TREE) == ONLINE | OFFLINE
    assert all(len(path) == 2 for path in TREE)


def test_one_place_for_each_thing() -> None:
    # Receipts, exports and dataset views each live under one noun.
    assert ("receipt",) not in TREE and ("audit", "receipt") not in TREE and ("node", "audit-export") not in TREE
    assert [p for p in TREE if p[1] in ("export", "dump")] == [("audit", "export"), ("audit", "dump")]
    assert not [p for p in TREE if p[0] in ("datasets", "queries", "status", "result", "cancel", "explain")]


@pytest.mark.parametrize("path", sorted(TREE), ids=" ".join)
def test_each_leaf(path: tuple[str, ...]) -> None:
    p, options = TREE[path], _options(TREE[path])
    assert {"-h", "--help"} <= options and p.description
    assert ("--json" in options) == (path not in NO_JSON)
    connection = options & set(FLAGS)
    assert connection == (set(FLAGS) if path in ONLINE else set()), connection
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        PARSER.parse_args([*path, "--help"])
    assert done.value.code == 0 and f"veil {' '.join(path)}" in out.getvalue()


@pytest.mark.parametrize("argv", [["dataset"], ["grant", "nosuchverb"], ["query", "submit"],
                                  ["audit", "verify", "f", "--bogus"], ["nosuchnoun"]])
def test_usage_mistakes_are_one_line(argv: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2 and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()


def test_errors_inside_a_verb_are_one_line(tmp_path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["audit", "verify", str(tmp_path / "missing.jsonl"), "--key", str(tmp_path / "missing.pub")])
    assert code == 2 and len(err.getvalue().strip().splitlines()) == 1 and "Traceback" not in err.getvalue()


@pytest.mark.parametrize("old, new", [
    (["datasets", "--json"], ["dataset", "list", "--json"]),
    (["dataset", "patients"], ["dataset", "show", "patients"]),
    (["dataset", "list-approve", "d", "--reason", "r"], ["dataset", "approve", "d", "--reason", "r"]),
    (["query", "SELECT 1", "--purpose", "p"], ["query", "submit", "SELECT 1", "--purpose", "p"]),
    (["queries"], ["query", "list"]), (["status", "q1"], ["query", "status", "q1"]),
    (["explain", "SELECT 1"], ["query", "explain", "SELECT 1"]),
    (["receipt", "q1", "--out", "r.json"], ["receipt", "get", "q1", "--out", "r.json"]),
    (["audit", "receipt", "r.json"], ["receipt", "verify", "r.json"]),
    (["usage", "--since", "2026-01-01"], ["usage", "report", "--since", "2026-01-01"]),
    (["budget", "people"], ["budget", "show", "people"]),
    (["node", "audit-export", "f"], ["audit", "dump", "f"]),
    (["dataset", "list"], ["dataset", "list"]), (["query", "--help"], ["query", "--help"]),
])
def test_earlier_spellings_are_hidden_aliases(old: list[str], new: list[str]) -> None:
    assert modernise(old, PARSER.get_default("verbs")) == new
    help_text = PARSER.format_help() + "".join(p.format_help() for p in TREE.values())
    assert "list-approve" not in help_text and "audit-export" not in help_text


def test_without_veil_server_the_node_nouns_say_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    parser = build_parser()
    assert "[needs veil-server]" in " ".join(parser.format_help().split())
    tree = dict(leaves(parser))
    assert [p for p in tree if p[0] in ("node", "token")] == [("node",), ("token",)] and ("audit", "dump") not in tree
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["node", "serve", "--config", "veil.toml"])
    # main() builds its own parser: the monkeypatched entry points apply there too.
    assert code == 2 and "pip install veil-server" in err.getvalue() and len(err.getvalue().splitlines()) == 1
