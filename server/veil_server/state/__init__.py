"""Where the node's own state lives: SQLite files, or PostgreSQL shared by several replicas.

- :mod:`.statedb`: the database (SQLite or PostgreSQL), one writer order, notifications.
- :mod:`.store`: queries, their transitions and encrypted results.
- :mod:`.lifecycle`: the query states and the transitions allowed between them.
- :mod:`.replicas`: heartbeats and the hand-over of a dead replica's runs.
- :mod:`.storage`: whether the state directory can take new work (free space, writability).

Governance, disclosure and the audit log keep their own tables in the same database.
"""
