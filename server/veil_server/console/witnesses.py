"""Witness cosignatures of a checkpoint, for the checkpoint history page.

A witness (another party that keeps the log's checkpoints and refuses to cosign a history that
forks or shrinks) turns "the node signed this root" into "the node and N independent parties saw
this root". This node's checkpoints carry no cosignatures yet; when the log stores them (issue
15's witnesses: C2SP signed notes with ``cosignature/v1`` lines), :func:`cosignatures` is the one
place that reads them from a checkpoint and says whether each verifies against a pinned witness
key, and the page shows them without other changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cosignature:
    witness: str  # the witness's name, as pinned in the node's config
    key_id: str
    time: str
    verified: bool


def cosignatures(checkpoint: Any) -> list[Cosignature]:
    """The witnesses' cosignatures on ``checkpoint`` (an ``audit_pb2.Checkpoint``); none until the
    log stores witness notes with its checkpoints."""
    return []
