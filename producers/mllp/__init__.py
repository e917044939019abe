"""HL7 v2 over MLLP: the listener that acknowledges only what is durably stored.

Layers, from the wire inwards: ``framing`` (bytes -> frames, sans-IO), ``intake`` (frame ->
verdict and records, pure), ``ack`` (verdict -> ACK bytes, pure), ``sink`` (publish or spool,
the durability state machine), ``spool``/``forwarder`` (SQLite WAL spool and its drain),
``dedup`` (retransmission window), ``server`` (asyncio sockets, limits, TLS).

With ``--workers N``: ``workers`` (the parent: port, supervision), ``worker`` (one worker
process), ``claims``/``tickets`` (retransmissions and spool mode shared by the workers).
"""
