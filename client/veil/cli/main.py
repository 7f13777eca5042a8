"""The ``veil`` command: ``veil NOUN VERB [arguments] [flags]``.

    veil dataset list | show | register | submit | approve | reject | suspend | resume | delist | versions
    veil query submit | status | result | cancel | list | explain
    veil model fit | list
    veil audit list | export | checkpoint | key | verify        veil receipt get | verify
    veil grant add | list | revoke     veil review list | show | approve | reject     veil cert get | verify
    veil usage report                  veil budget show           veil completion bash | zsh
    veil node ... / veil token ...     (with veil-server installed)

Connection flags (``--target --token-file --ca --cert --key-file``, each with its ``VEIL_*``
variable) are on every verb that contacts a node; ``--json`` on every verb that prints a record.
Every error is one line on stderr and a non-zero exit: 1 when a verification fails (or on an
unexpected error), 2 for a refusal or a usage mistake, 3 when the node cannot be reached.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

from ..errors import Unavailable, VeilError
from . import aliases, audit, completion, dataset, governance, model, plugins, query, usage
from .command import Commands, Parser, UsageError

REFUSED, UNREACHABLE, FAILED, BROKEN_PIPE = 2, 3, 1, 141


def _versions() -> str:
    out = []
    for dist in ("veil", "veil-server"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out) or "veil (not installed)"


def build_parser() -> Parser:
    parser = Parser(prog="veil", description="Veil: query data you cannot see. `veil NOUN VERB --help` for more.")
    parser.add_argument("--version", action="version", version=_versions())
    cli = Commands(parser)
    for noun in (dataset, query, model, audit, governance, usage, completion):
        noun.register(cli)
    parser.set_defaults(missing_nouns=plugins.add_plugins(cli), verbs=cli.verbs())
    return parser


def run(parser: Parser, argv: list[str] | None = None) -> int:
    argv = aliases.modernise(sys.argv[1:] if argv is None else list(argv), parser.get_default("verbs"))
    noun = plugins.missing_noun(argv, parser.get_default("missing_nouns"))
    if noun is not None:
        return plugins.report_missing(noun)
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0  # verbs that verify return 1 when verification fails
    except BrokenPipeError:
        raise  # handled in main(), around the printing of help too
    except Unavailable as e:
        return _fail(f"cannot reach the node [{e.reason or 'UNAVAILABLE'}]: {e.message}", UNREACHABLE)
    except VeilError as e:
        return _fail(str(e), REFUSED)
    except (UsageError, OSError, ValueError) as e:
        return _fail(str(e) or type(e).__name__, REFUSED)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # one line, never a traceback: the message names the failing part
        return _fail(f"unexpected error ({type(e).__name__}): {e}", FAILED)


def _fail(message: str, code: int) -> int:
    print(f"veil: {' '.join(message.split())}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        code = run(build_parser(), argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`veil ... | head`): stop quietly, as a pipeline expects.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
