"""Ingest: log text in, SIP messages, registrar events and REGISTER transactions out.

The flow, one module per step::

    framing.py       LogChunk text -> records (drachtio stamps, prefixes, SIP dumps, pino lines)
    sip.py           a SIP dump's start line and headers -> SipMessage
    registrar.py     pino JSON and drachtio controller lines -> ServiceEvent
    transactions.py  SipMessage -> RegisterTransaction / RegisterAttempt (Timer F, bounded)

Nothing here does I/O or awaits; the drivers (``sipwatch.replay``, ``sipwatch.daemon``) feed
it through ``sipwatch.pipeline``.
"""
