"""Every secret an apprise URL can carry stays masked wherever sipwatch prints the URL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sipwatch.cli.check_config import check_config_main
from sipwatch.config.secrets import mask_apprise_url

TOKENS = ("abc123secret", "k3yvalue", "t0kenvalue", "qsecretvalue", "hookpathtoken9")

URLS = [
    # header, payload and GET pass-through values: apprise's privacy form keeps them
    "json://hook.example.com/api/hookpathtoken9?+Authorization=Bearer%20abc123secret"
    "&+X-Api-Key=k3yvalue&:token=t0kenvalue&-q=qsecretvalue",
    "form://user:k3yvalue@hook.example.com/hookpathtoken9?+Authorization=Basic%20abc123secret",
    "xml://hook.example.com/x?:apikey=t0kenvalue",
]


@pytest.mark.parametrize("url", URLS)
def test_masked_form_keeps_no_token(url: str) -> None:
    masked = mask_apprise_url(url)
    assert "hook.example.com" in masked  # still tells the operator where it goes
    for token in TOKENS:
        assert token not in masked, masked


def test_check_config_prints_no_apprise_token(tmp_path: Path) -> None:
    config = tmp_path / "sipwatch.toml"
    targets = "".join(f'[[alerts.targets]]\nurl = "{u}"\n' for u in URLS)
    config.write_text(targets, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(config), environ={}, stdout=out, stderr=err) == 0, err.getvalue()
    printed = out.getvalue() + err.getvalue()
    assert printed.count("alerts.targets[") >= 3
    for token in TOKENS:
        assert token not in printed
