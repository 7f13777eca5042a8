"""Federated queries: one aggregate over a dataset split across several nodes (issue 6).

Each member node holds its own part, policy, approvals and audit log. An analyst asks any
member (the coordinator); every member approves its own part under its own rules and computes
its partial aggregate over the whole public group domain; the partials are combined so that
nobody -- the coordinator included -- sees another member's partial, and the analyst decrypts
the total only. Two protocols, chosen per query:

- ``paillier_protocol``: pairwise zero-sum masks, encryption under the analyst's key, the
  coordinator multiplies ciphertexts.
- ``sharing_protocol``: additive secret sharing over Z_2^B among m >= 2 compute parties.

Both first reconstruct the *combined* counts (members learn them, the analyst does not) and
release the other totals only for groups whose combined counts reach k, the largest of the
members' minimum group sizes. Each protocol module states what each party learns.

Modules: ``settings`` (the [federation] config), ``envelope`` (signed peer messages, pinned
keys), ``pairwise`` (X25519 seeds, masks, sealed shares), ``ring`` (Z_2^B), ``partial`` (the
partial vector and the k rule), the two protocols, ``participant`` (a member's steps),
``coordinator``, ``transport`` (calls to members), ``result``, ``audit``. The gRPC servicers
(``FederationService``, ``PeerService``) are ``veil_server.api.federation_service``.

This package must stay importable from ``config.py`` (``settings`` only, no heavy imports here).
"""
