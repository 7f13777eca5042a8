"""Earlier spellings of ``veil`` commands, still accepted (and not listed in ``--help``).

Before ``veil NOUN VERB`` the command grew verb by verb; scripts written then keep working:

    veil datasets                    -> veil dataset list
    veil dataset NAME                -> veil dataset show NAME
    veil dataset list-approve|list-reject NAME   -> veil dataset approve|reject NAME
    veil query SQL ...               -> veil query submit SQL ...
    veil queries | status | result | cancel | explain ...  -> veil query list | status | ...
    veil receipt QUERY               -> veil receipt get QUERY
    veil audit receipt FILE          -> veil receipt verify FILE
    veil usage [flags]               -> veil usage report [flags]
    veil budget DATASET              -> veil budget show DATASET
    veil node audit-export FILE      -> veil audit dump FILE
"""

from __future__ import annotations

from typing import Mapping

RENAMED_NOUNS = {"datasets": ("dataset", "list"), "queries": ("query", "list"), "status": ("query", "status"),
                 "result": ("query", "result"), "cancel": ("query", "cancel"), "explain": ("query", "explain")}
RENAMED_VERBS = {("dataset", "list-approve"): ("dataset", "approve"), ("dataset", "list-reject"): ("dataset", "reject"),
                 ("audit", "receipt"): ("receipt", "verify"), ("node", "audit-export"): ("audit", "dump")}
# A noun followed by something that is not one of its verbs: the verb it used to imply.
IMPLIED_VERB = {"dataset": "show", "query": "submit", "receipt": "get", "usage": "report", "budget": "show"}


def modernise(argv: list[str], verbs: Mapping[str, set[str]]) -> list[str]:
    """``argv`` in today's grammar (unchanged when it already is); ``verbs``: each noun's verbs."""
    if not argv or argv[0].startswith("-"):
        return argv
    noun, rest = argv[0], argv[1:]
    if noun in RENAMED_NOUNS:
        return [*RENAMED_NOUNS[noun], *rest]
    if rest and (noun, rest[0]) in RENAMED_VERBS:
        return [*RENAMED_VERBS[(noun, rest[0])], *rest[1:]]
    known = verbs.get(noun)
    if noun in IMPLIED_VERB and known is not None and not (rest and (rest[0] in known or rest[0] in ("-h", "--help"))):
        return [noun, IMPLIED_VERB[noun], *rest]
    return argv
