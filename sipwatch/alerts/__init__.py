"""Alerting: incidents from diagnosed problems, grouped, throttled and delivered through apprise.

``AlertManager`` (``manager``) is the stage; ``AlertInput`` (``model``) is what the diagnosis
stage submits; ``incidents`` keeps what each alert is about (exact counts, how it ends);
``escape`` and ``render`` turn untrusted text into safe per-format messages.
"""

from sipwatch.alerts.manager import AlertManager
from sipwatch.alerts.model import AlertInput, Notice, normalise_severity

__all__ = ["AlertInput", "AlertManager", "Notice", "normalise_severity"]
