"""Alerting: route, throttle, group and deliver diagnosed problems through apprise.

``AlertManager`` (``manager``) is the stage; ``AlertInput`` (``model``) is what the diagnosis
stage submits; ``escape`` and ``render`` turn untrusted text into safe per-format messages.
"""

from sipwatch.alerts.manager import AlertManager
from sipwatch.alerts.model import AlertInput, Notice

__all__ = ["AlertInput", "AlertManager", "Notice"]
