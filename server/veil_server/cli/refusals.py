"""Why a node did not start, on one line: the file, the first disagreeing position, the fix.

An operator reads this after a bad restore, a full disk or a replaced key; a traceback ending in
``AUDIT_UNAVAILABLE`` names none of those. Each cause the node can meet before it serves is
turned into ``FILE: PROBLEM at POSITION: what; fix: what to do``.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from ..access.node_key import NodeKeyError
from ..audit.anchoring import StartRefused
from ..audit.errors import AuditCorrupted, AuditUnavailable
from ..state.damage import StateCorrupted
from ..state.statedb import StateUnavailable

# (words in the underlying error, problem, fix): the first match wins.
_CAUSES = (
    (("readonly", "read-only", "erofs", "permission denied", "access"), "NOT_WRITABLE",
     "make the state directory writable by the node's user (is the file system mounted read-only?)"),
    (("disk is full", "no space", "enospc", "quota"), "DISK_FULL", "free space on the state directory's file system"),
    (("public_key", "key_id"), "NODE_KEY_REPLACED",
     "node_key.pem is not the key this log was signed with: put the original node_key.pem back "
     "(a new key is a new node: start it in a new state directory)"),
    (("node_id",), "NODE_KEY_REPLACED", "put the original node_key.pem back"),
    (("not a database", "malformed", "disk image", "file is encrypted", "i/o error"), "FILE_DAMAGED",
     "restore the file from a backup that matches the other one; `veil node audit-export` reads what is left of a log"),
)


def start_refusal(exc: BaseException, state_dir: Path) -> str | None:
    """One line for ``exc`` if it is a reason not to start; ``None`` for anything else."""
    if isinstance(exc, StartRefused):
        return exc.line()
    if isinstance(exc, AuditCorrupted):
        at = f"entry {exc.index}" if exc.index is not None else "its checkpoints"
        where = exc.where or str(state_dir / "audit.db")
        return (f"{where}: {exc.problem} at {at}: {exc.detail}; fix: restore {Path(where).name} from a backup "
                "that matches the state (the log cannot be repaired in place; `veil node audit-export` "
                "reads what is left of it for an auditor)")
    if isinstance(exc, StateCorrupted):
        return f"{exc.where}: {exc.problem}: {exc.detail}; fix: restore it from a backup that matches the log, " \
               "or `veil node recover --config CONFIG`"
    if isinstance(exc, AuditUnavailable):
        return _classified(exc.private or exc.message, str(state_dir / "audit.db"))
    if isinstance(exc, NodeKeyError):
        return f"{state_dir / 'node_key.pem'}: NODE_KEY_UNUSABLE: {exc.message}; fix: restore the node's key file " \
               "(mode 0600)"
    if isinstance(exc, StateUnavailable):
        return f"state database: UNREACHABLE: {exc}"
    if isinstance(exc, sqlite3.Error):
        return _classified(str(exc), str(state_dir / "state.db"))
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT):
        return _classified(f"{exc.strerror} {errno.errorcode.get(exc.errno, '')}", exc.filename or str(state_dir))
    return None


def _filesystem(path: Path) -> str:
    """What the state directory's file system says: read-only, full, or nothing to say."""
    try:
        st = os.statvfs(path)
    except OSError:
        return ""
    if st.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if st.f_bavail * st.f_frsize < 64 * 1024:
        return "no space left on the file system"
    return ""


def _classified(text: str, default_file: str) -> str:
    where = default_file
    text = " ".join(filter(None, [text, _filesystem(Path(default_file).parent)]))
    for word in text.split():
        if word.rstrip(":,").endswith((".db", ".pem")):
            where = word.rstrip(":,")
            break
    low = text.lower()
    for words, problem, fix in _CAUSES:
        if any(w in low for w in words):
            return f"{where}: {problem}: {_short(text)}; fix: {fix}"
    return f"{where}: UNAVAILABLE: {_short(text)}; fix: check the file and its directory"


def _short(text: str) -> str:
    return " ".join(text.split())[:300]
