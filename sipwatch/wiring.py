"""Builds the daemon's network-facing sinks from the configuration."""

from __future__ import annotations

from typing import Any

from sipwatch.config import Config
from sipwatch.metrics import SipwatchMetrics


def make_diagnoser(config: Config, metrics: SipwatchMetrics) -> Any:
    return None


def make_sink(config: Config, metrics: SipwatchMetrics) -> Any:
    return None
