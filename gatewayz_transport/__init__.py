"""How both sides talk to Redis: the transport, kept apart from the contract.

``urls`` (which Redis a URL names: one, a Cluster, a Sentinel-managed master), ``connection``
(``connect``: connections that never retry on their own and send a pipeline in one buffer),
``routing`` (pipelines routed per Cluster node), ``raw`` (commands sent and replies taken as
Redis sent them, the aggregator's hot read), ``scripts`` (Lua run by its SHA, reloaded when
Redis forgot it) and ``errors`` (what a refusal means: transient, out of memory).

The contract (``gatewayz_protocol``: keys, fields, scripts' text) imports none of this; this
package imports neither side (``client``, ``aggregator``) nor the contract.
"""
