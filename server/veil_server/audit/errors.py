"""Why the audit log refuses: it cannot make an entry durable, or it failed its integrity check.

Both are UNAVAILABLE with reason ``AUDIT_UNAVAILABLE`` on the wire: the caller learns only that
the action was not performed and may be retried later. What went wrong (which entry, which
check, the OS error) is in ``private``, for the owner's logs.
"""

from __future__ import annotations

from ..errors import Unavailable

PUBLIC_MESSAGE = "the audit log is unavailable; the action was not performed"


class AuditUnavailable(Unavailable):
    """An entry could not be made durable (or the log cannot be opened). Fail closed: the
    caller must not perform the action it was about to log."""

    default_reason = "AUDIT_UNAVAILABLE"

    def __init__(self, private: str, *, message: str = PUBLIC_MESSAGE) -> None:
        super().__init__(message, private=private)


class AuditCorrupted(AuditUnavailable):
    """The stored log does not match itself or its signed checkpoints; the node must not start.

    ``index`` is the first entry found bad (``None`` when no single entry can be named) and
    ``problem`` an UPPER_SNAKE code such as ``ENTRY_MODIFIED``, ``ENTRY_MISSING``,
    ``ENTRY_OUT_OF_ORDER``, ``TRUNCATED``, ``CHECKPOINT_MISMATCH``.
    """

    def __init__(self, problem: str, index: int | None, detail: str) -> None:
        where = f"entry {index}: " if index is not None else ""
        super().__init__(f"audit log integrity check failed: {problem}: {where}{detail}")
        self.problem = problem
        self.index = index
        self.detail = detail
        self.where = ""  # the file (or schema) checked, set by whoever opened it
