"""The node's side of the ``veil`` command: ``veil node ...`` and ``veil token ...``.

- :mod:`.node`: ``veil node init | serve | audit-export``, and ``main``.
- :mod:`.token`: ``veil token issue | revoke | list`` (the operator's tokens).
- :mod:`.provision`, :mod:`.demo`, :mod:`.federation_demo`: the folders ``veil node init``, the
  demos, tests and benchmarks write (config, synthetic data, development CA, tokens).
"""
