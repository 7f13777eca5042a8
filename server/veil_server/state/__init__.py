"""Where the node's own state lives: SQLite files, or PostgreSQL shared by several replicas.

- :mod:`.statedb`: the database (SQLite or PostgreSQL), one writer order, notifications.
- :mod:`.store`: queries, their transitions and encrypted results.
- :mod:`.lifecycle`: the query states and the transitions allowed between them.
- :mod:`.replicas`: heartbeats and the hand-over of a dead replica's runs.
- :mod:`.storage`: whether the state directory can take new work (free space, writability).
- :mod:`.anchor`: the log position each audited state transaction was written with, and the
  digest of the whole state a clean stop logs (issue 15).
- :mod:`.damage`: damaged files and rows as named DATA_LOSS refusals, never INTERNAL.

Governance, disclosure and the audit log keep their own tables in the same database.
"""
