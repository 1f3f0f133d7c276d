"""Issue 13.8 through ``sipwatch run``: the jambonz database goes away and comes back (a TCP
gate in front of the real MariaDB).  Said once - log line, system alert, /readyz - and its
return too."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.alert_receivers import HttpReceiver
from tests.daemon_runner import FileDaemon
from tests.jambonz_db import MARIADB_HOST, MARIADB_PORT
from tests.tcp_gate import TcpGate


async def test_database_loss_and_return_through_the_daemon(
    tmp_path: Path,
    http: HttpReceiver,
    jambonz_database: str,
) -> None:
    async with TcpGate(MARIADB_HOST, MARIADB_PORT) as gate:
        extra = f"""
[database]
url = "mysql://root@127.0.0.1:{gate.port}/{jambonz_database}"
connect_timeout = 1
read_timeout = 1
[alerts]
[[alerts.targets]]
name = "ops"
url = "{http.url()}"
"""
        async with FileDaemon(tmp_path, extra) as d:

            async def ready() -> tuple[int, dict[str, Any]]:
                status, body = await d.get("/readyz")
                return status, json.loads(body)

            async with asyncio.timeout(60):
                while (await ready())[1]["sources"].get("database") is not True:
                    await asyncio.sleep(0.2)
                await gate.close()
                while (await ready())[0] != 503:
                    await asyncio.sleep(0.2)
                _status, body = await ready()
                assert list(body["down"]) == ["database"]
                assert body["down"]["database"].startswith("db_unavailable")
                reason = body["details"]["dependencies"]["database"]["reason"]
                assert reason.startswith("db_unavailable")
                await http.wait_for(1)
                await asyncio.sleep(12)  # two more failed probes (every 5 s): nothing more
                await gate.open()
                while (await ready())[0] != 200:
                    await asyncio.sleep(0.2)
                await http.wait_for(2)
                await asyncio.sleep(1)
            down = [e for e in d.events("dependency unreachable") if e["dependency"] == "database"]
            back = [e for e in d.events("dependency is back") if e["dependency"] == "database"]
    assert len(down) == 1 and len(back) == 1
    assert [r.payload["title"] for r in http.delivered] == [
        "[ERROR] database_unreachable: database",
        "[RESOLVED] database_unreachable: database reachable again",
    ]
