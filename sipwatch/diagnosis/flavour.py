"""Which registrar runs: legacy ``sbc-registrar`` or current ``sbc-sip-sidecar``.

The two decide differently (reference §0): legacy authenticates only through a registration
webhook and ignores ``accounts.is_active`` and the ``clients`` table; the sidecar checks
``clients`` when there is no webhook.  The container image is the reliable signal; some
startup log lines only the sidecar prints are a second one.
"""

from __future__ import annotations

from typing import Literal

Flavour = Literal["sidecar", "legacy"]

_SIDECAR_LOG_MARKERS = (", local hostports:", "sbc public ip addresses", "drachtio sip contacts")
_LEGACY_LOG_MARKERS = (
    "http webhook failed",
    "sending 200 OK",
    "Error from calling auth callback: ",
)


def flavour_from_image(image: str | None) -> Flavour | None:
    """``jambonz/sbc-sip-sidecar:0.9.6`` -> sidecar; ``jambonz/sbc-registrar:latest`` -> legacy."""
    if not image:
        return None
    name = image.rsplit("@", 1)[0].lower()
    if "sbc-sip-sidecar" in name:
        return "sidecar"
    if "sbc-registrar" in name:
        return "legacy"
    return None


def flavour_from_process_name(name: str | None) -> Flavour | None:
    """pm2 app / compose service / Kubernetes container name."""
    return flavour_from_image(name)


def flavour_from_log_message(msg: str) -> Flavour | None:
    """A registrar log ``msg`` that only one flavour prints, else None."""
    if any(m in msg for m in _SIDECAR_LOG_MARKERS):
        return "sidecar"
    if any(m in msg for m in _LEGACY_LOG_MARKERS):
        return "legacy"
    return None
