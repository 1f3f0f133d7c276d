"""``/api/failures`` of a running daemon: each group with its current cause and fix."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from sipwatch.config import parse_config
from sipwatch.daemon.driver import Daemon
from sipwatch.daemon.stages import make_diagnoser
from sipwatch.sources.file import FileSource

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [ROOT / "examples" / "drachtio-sbc.log", ROOT / "examples" / "sbc-sip-sidecar.log"]


async def test_api_failures_carries_the_diagnosed_cause(unused_tcp_port: int) -> None:
    config = parse_config(
        f'[metrics]\nlisten = "127.0.0.1:{unused_tcp_port}"\n[sources.docker]\nenabled = false\n'
    )
    sources = [(str(p), FileSource(p, follow=False)) for p in EXAMPLES]
    daemon = Daemon(config, sources=sources, diagnoser_factory=make_diagnoser)  # type: ignore[arg-type]
    task = asyncio.create_task(daemon.run())
    url = f"http://127.0.0.1:{unused_tcp_port}/api/failures?state=open"
    try:
        async with asyncio.timeout(30):
            await daemon.input_done.wait()
            async with aiohttp.ClientSession() as session:
                while True:
                    async with session.get(url) as resp:
                        failures = (await resp.json())["failures"]
                    diagnosable = [f for f in failures if f["status"] != "timeout"]
                    if diagnosable and all(f["cause"] for f in diagnosable):
                        break
                    await asyncio.sleep(0.2)
    finally:
        daemon.stop_event.set()
        await task
    by_user = {(f["user"], f["domain"]): f["cause"] for f in failures}
    realm_is_ip = by_user[("5001", "198.51.100.10")]
    assert realm_is_ip["id"] == "realm_is_ip" and realm_is_ip["severity"] == "error"
    assert realm_is_ip["confidence"] in ("confirmed", "suspected") and realm_is_ip["fix"]
    assert by_user[("7007", "acme.sip.example.com")]["id"] == "registrar_down"
    scanner = next(f for f in failures if f["scanner"])
    assert scanner["cause"]["id"] == "scanner" and scanner["distinct_users"] == 8
