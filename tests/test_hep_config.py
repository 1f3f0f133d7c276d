"""`[sources.hep]`: defaults, environment, validation and masking."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.core import CounterMetricFamily

from sipwatch.config import (
    DEFAULT_HEP_ALLOW,
    Config,
    ConfigError,
    parse_config,
    parse_udp_url,
)
from sipwatch.sources import SOURCE_KINDS
from sipwatch.sources.hep.stats import HepCollector, HepStats


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="t.toml", environ=environ or {})
    return [str(p) for p in info.value.problems]


def test_off_by_default_and_the_source_kind_follows_listen() -> None:
    hep = Config().sources.hep
    assert hep.listen is None
    assert hep.allow_networks == DEFAULT_HEP_ALLOW
    assert hep.sip_truth == "hep" and hep.forward == () and hep.sbc_addresses == ()
    kind = next(k for k in SOURCE_KINDS if k.name == "hep")
    assert not kind.enabled(Config())
    config = parse_config('[sources.hep]\nlisten = "127.0.0.1:9060"\n', environ={})
    assert kind.enabled(config)
    assert config.sources.hep.listen == "127.0.0.1:9060"


def test_listen_from_the_environment_and_no_missing_source_warning() -> None:
    text = "[sources.docker]\nenabled = false\n"
    config = parse_config(text, environ={"SIPWATCH_HEP_LISTEN": "[::]:9060"})
    assert config.sources.hep.listen == "[::]:9060"
    assert not any("no log source" in w for w in config.meta.warnings)
    assert any("no log source" in w for w in parse_config(text, environ={}).meta.warnings)
    assert "environment variable SIPWATCH_HEP_LISTEN" in config.describe()


def test_values_are_validated() -> None:
    found = problems(
        """
[sources.hep]
listen = "9060"
allow_networks = ["10.0.0.5/8", "not-a-network"]
forward = ["tcp://homer:9060", "udp://homer", "udp://homer:9060", "udp://homer:9060"]
sbc_addresses = ["10.0.0.5"]
sip_truth = "log"
receive_buffer_bytes = 1024
max_agents = 0
"""
    )
    text = "\n".join(found)
    assert 'sources.hep.listen: expected "host:port"' in text
    assert 'has host bits set; did you mean "10.0.0.0/8"?' in text
    assert "'not-a-network' is neither" in text
    assert "sources.hep.forward" in text
    assert "sources.hep.sip_truth" in text and "did you mean 'logs'" in text
    assert "sources.hep.receive_buffer_bytes: expected a number >= 65536" in text
    assert "sources.hep.max_agents: expected a number >= 1" in text
    # every problem is reported at once, one line each
    assert len(found) == 6, found  # sbc_addresses = ["10.0.0.5"] is valid


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("tcp://homer:9060", "HEP is forwarded over UDP"),
        ("udp://homer", "the port is missing"),
        ("udp://:9060", "the host is missing"),
        ("udp://homer:9060/path", "HEP is forwarded over UDP"),
        ("udp://[2001:db8::1:9060", "expected"),
    ],
)
def test_forward_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_udp_url(url)


def test_forward_url_forms() -> None:
    assert str(parse_udp_url("udp://homer:9060")) == "homer:9060"
    assert str(parse_udp_url("UDP://[2001:db8::1]:9060")) == "[2001:db8::1]:9060"
    dup = problems('[sources.hep]\nforward = ["udp://h:1", "udp://h:1"]\n')
    assert any("listed twice" in p for p in dup)


def test_auth_key_is_a_masked_secret() -> None:
    config = parse_config(
        '[sources.hep]\nlisten = "127.0.0.1:9060"\n',
        environ={"SIPWATCH_HEP_AUTH_KEY": "hunter2-hep"},
    )
    key = config.sources.hep.auth_key
    assert key is not None and key.reveal() == "hunter2-hep"
    assert "hunter2-hep" not in config.describe()
    assert "hunter2-hep" not in repr(config)
    assert "hunter2-hep" not in str(config.redacted())


DOCS = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"


def test_the_deployment_docs_hep_mode() -> None:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("<!-- config:hep -->")
    block = text[start:].split("```toml\n", 1)[1].split("```", 1)[0]
    hep = parse_config(block, environ={}).sources.hep
    assert hep.listen == "0.0.0.0:9060" and hep.forward[0].startswith("udp://")
    # drachtio's options, as drachtio-server's documentation spells them
    for option in (
        '<capture-server port="9060" hep-version="3" id="101">',
        "--homer 10.0.0.20:9060 --homer-id 101",
        "DRACHTIO_HOMER_ADDRESS=",
        "DRACHTIO_HOMER_PORT=",
        "DRACHTIO_HOMER_ID=",
        "drachtio.homerId",
    ):
        assert option in text, option
    # every family the HEP collector exports is in the metrics table
    stats = HepStats(kernel_drops=lambda: 0)
    families = list(HepCollector(stats).collect())
    assert len(families) == 12
    for family in families:
        exposed = family.name + ("_total" if isinstance(family, CounterMetricFamily) else "")
        assert f"`{exposed}`" in text, exposed
