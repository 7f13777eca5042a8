"""The node's side of the ``veil`` command: ``veil node ...``, ``veil token ...``, ``veil audit dump``.

- :mod:`.node`: ``veil node init | serve``.
- :mod:`.token`: ``veil token issue | revoke | list`` (the operator's tokens).
- :mod:`.audit`: ``veil audit dump`` (the audit log from the node's own files).
- :mod:`.node_config`: ``--config``, the ``veil.toml`` these verbs read.
- :mod:`.provision`, :mod:`.demo`, :mod:`.federation_demo`: the folders ``veil node init``, the
  demos, tests and benchmarks write (config, synthetic data, development CA, tokens).

Each verb module's ``register(cli)`` is an entry point of the group ``veil.cli``, by which the
library's ``veil`` command (:mod:`veil.cli`) finds them; ``python -m veil_server.cli`` runs it.
"""
