"""drachtio's HEP capture feed as a source: the listener (``listener``), a decoder that takes
hostile bytes (``decode``), the receive path from packet to ``SipMessage`` (``intake``), the
SBC's own addresses for direction (``addresses``), forwarding to Homer (``forward``) and the
self-metrics (``stats``)."""

from sipwatch.sources.hep.listener import HepSource, build

__all__ = ["HepSource", "build"]
