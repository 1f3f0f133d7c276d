"""The registration-webhook probe against a real local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from sipwatch.diagnosis.jambonz import Webhook
from sipwatch.diagnosis.webhook_probe import (
    PROBE_SOURCE_ADDRESS,
    PROBE_USERNAME,
    classify_response,
    probe_registration_webhook,
)
from tests.jambonz_db import WebhookServer, closed_port


@pytest.mark.parametrize(
    ("behaviour", "outcome", "status"),
    [
        ("ok", "ok", 200),
        ("fail", "fail", 200),
        ("empty", "no_status", 200),
        ("numeric", "invalid_status", 200),
        ("html", "not_json", 200),
        ("notfound", "http_error", 404),
    ],
)
async def test_probe_outcomes(
    webhook_server: WebhookServer, behaviour: str, outcome: str, status: int
) -> None:
    hook = Webhook("sid", webhook_server.url(behaviour))
    res = await probe_registration_webhook(hook, realm="acme.example.com", webhook_secret=None)
    assert (res.outcome, res.http_status) == (outcome, status)


async def test_probe_sends_fake_credentials_signed_like_jambonz(
    webhook_server: WebhookServer,
) -> None:
    hook = Webhook("sid", webhook_server.url("fail"))
    await probe_registration_webhook(hook, realm="acme.example.com", webhook_secret="whsec")
    req = webhook_server.requests[-1]
    body = json.loads(req["body"])
    assert req["method"] == "POST"
    assert body["username"] == PROBE_USERNAME
    assert body["source_address"] == PROBE_SOURCE_ADDRESS
    assert body["response"] == "0" * 32
    assert body["realm"] == "acme.example.com" and body["method"] == "REGISTER"
    sig = req["headers"]["Jambonz-Signature"]
    t, v1 = (part.split("=", 1)[1] for part in sig.split(","))
    expected = hmac.new(b"whsec", f"{t}.{req['body']}".encode(), hashlib.sha256).hexdigest()
    assert v1 == expected and abs(int(t) - time.time()) < 60


async def test_get_webhooks_get_a_query_string(webhook_server: WebhookServer) -> None:
    hook = Webhook("sid", webhook_server.url("ok"), method="GET")
    res = await probe_registration_webhook(hook, realm="r.example.com", webhook_secret=None)
    assert res.outcome == "ok"
    req = webhook_server.requests[-1]
    assert req["method"] == "GET" and req["query"]["username"] == PROBE_USERNAME


async def test_basic_auth_from_the_webhook_row_is_sent(webhook_server: WebhookServer) -> None:
    anonymous = Webhook("sid", webhook_server.url("auth"))
    res = await probe_registration_webhook(anonymous, realm="r", webhook_secret=None)
    assert res.outcome == "http_error" and res.http_status == 401
    authed = Webhook("sid", webhook_server.url("auth"), username="hookuser", password="hookpass")
    res = await probe_registration_webhook(authed, realm="r", webhook_secret=None)
    assert res.outcome == "fail"
    assert "hookpass" not in repr(res)


async def test_refused_and_hanging_webhooks_are_unreachable(
    webhook_server: WebhookServer,
) -> None:
    refused = Webhook("sid", f"http://127.0.0.1:{closed_port()}/reg")
    res = await probe_registration_webhook(refused, realm="r", webhook_secret=None)
    assert res.outcome == "unreachable" and "connect" in res.detail
    start = time.monotonic()
    hanging = Webhook("sid", webhook_server.url("hang"))
    res = await probe_registration_webhook(hanging, realm="r", webhook_secret=None, timeout=0.5)
    assert res.outcome == "unreachable" and "no answer" in res.detail
    assert time.monotonic() - start < 2.0


async def test_non_http_urls_are_not_fetched() -> None:
    res = await probe_registration_webhook(
        Webhook("sid", "file:///etc/passwd"), realm="r", webhook_secret=None
    )
    assert res.outcome == "unreachable" and res.http_status is None


async def test_url_credentials_never_reported(webhook_server: WebhookServer) -> None:
    url = webhook_server.url("ok").replace("http://", "http://user:urlsecret@") + "?token=t0k"
    res = await probe_registration_webhook(Webhook("sid", url), realm="r", webhook_secret=None)
    assert res.outcome == "ok"
    assert "urlsecret" not in res.url and "t0k" not in res.url


def test_classify_response_matches_digest_utils() -> None:
    assert classify_response(200, b'{"status":"OK"}')[0] == "ok"
    assert classify_response(200, b'{"status":"maybe"}')[0] == "fail"
    assert classify_response(200, b"[1,2]")[0] == "no_status"
    assert classify_response(200, b'{"status":null}')[0] == "no_status"
    assert classify_response(201, b'{"status":"ok"}')[0] == "http_error"
    assert classify_response(200, b"\xff\xfe")[0] == "not_json"
