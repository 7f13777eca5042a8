"""The ``veil`` command line: analysts, owners, reviewers and auditors talking to a node."""

from .main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
