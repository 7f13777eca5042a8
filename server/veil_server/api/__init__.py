"""The gRPC face of a node: thin servicers and the server that wires them.

Each servicer authenticates nothing itself (the interceptors in :mod:`veil_server.access` did),
translates a request into a call on :class:`veil_server.node.Node` or a domain object, and
translates the answer back. Refusals are raised as the node's exception tree
(:mod:`veil_server.errors`) and mapped to statuses in one place, the authentication interceptor.

- :mod:`.server`: ``run_server`` / ``serve_forever``: binding, interceptors, health, reflection.
- :mod:`.query_service`: ``CatalogService`` and ``QueryService``.
- :mod:`.governance_service`: ``GovernanceService`` and ``ReviewService``.
- :mod:`.audit_service`: ``AuditService``.
- :mod:`.federation_service`: ``FederationService`` (analysts) and ``PeerService`` (nodes).

Nothing outside this package imports it, except the node's command line.
"""
