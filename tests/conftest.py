"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.alert_receivers import HttpReceiver, SmtpReceiver


@pytest.fixture
async def http() -> AsyncIterator[HttpReceiver]:
    """A local JSON webhook (apprise ``json://``) that records what it receives."""
    async with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpReceiver]:
    """A local SMTP server (apprise ``mailto://``) that collects messages."""
    async with SmtpReceiver() as receiver:
        yield receiver
