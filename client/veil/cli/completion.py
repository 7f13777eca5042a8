"""``veil completion bash`` / ``veil completion zsh``: a completion script made from the parser.

    veil completion bash > ~/.local/share/bash-completion/completions/veil
    veil completion zsh > "${fpath[1]}/_veil"
"""

from __future__ import annotations

import argparse

from .command import Commands

SHELLS = ("bash", "zsh")


def register(cli: Commands) -> None:
    noun = cli.noun("completion", "print a shell completion script")
    for shell in SHELLS:
        def complete(args: argparse.Namespace, shell: str = shell) -> None:
            import shtab

            print(shtab.complete(cli.parser, shell=shell))

        # The output is a script for the shell, not a record: no --json.
        noun.verb(shell, complete, f"print the {shell} completion script", json=False)
