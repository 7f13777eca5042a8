"""Who may call the node, and how much: identity, tokens, TLS, roles, limits, the request guard.

- :mod:`.auth`: the authentication interceptor, the role of every RPC (deny by default), and the
  one mapping of the node's exceptions to gRPC statuses.
- :mod:`.identity`: who is calling (client certificate, signed token, development token).
- :mod:`.tokens`: signed bearer tokens, their issue log and revocation list.
- :mod:`.node_key`: the node's Ed25519 key (tokens, checkpoints, certificates, peer envelopes).
- :mod:`.tls`, :mod:`.dev_ca`: transport security and the development CA.
- :mod:`.limits`, :mod:`.guard`: per-principal limits and the interceptor that applies them,
  refuses malformed bytes and drains on shutdown.
- :mod:`.security`: the ``[tls]``, ``[tokens]``, ``[limits]`` sections wired together.
"""
