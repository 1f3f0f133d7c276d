"""``sipwatch run`` stops on SIGTERM, also right after start-up with its dependencies up.

Before ``sipwatch.waits``, about one stop in seven at that moment hung until SIGKILL (a
``systemctl stop`` waiting out its timeout): the stop's cancel was lost in 3.11's
``wait_for`` or inside a database or Redis client during a dependency probe.  Several
daemons are stopped at once, each at the moment it is up, to give the race its chances."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.daemon_runner import FileDaemon
from tests.jambonz_db import MARIADB_HOST, MARIADB_PORT, REDIS_TEST_DB, REDIS_URL_BASE

DAEMONS = 6
STOP_BOUND = 15.0  # seconds; a stop takes well under one (shutdown_timeout is 10)


async def _start_and_stop(workdir: Path, database: str) -> tuple[int | None, str]:
    workdir.mkdir()
    extra = f"""
[database]
url = "mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{database}"
[redis]
url = "{REDIS_URL_BASE}/{REDIS_TEST_DB}"
"""
    daemon = FileDaemon(workdir, extra)
    async with daemon:
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)  # the moment /healthz first answers
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(daemon.proc.wait())], timeout=STOP_BOUND
        )
        code = daemon.proc.returncode if done else None
    return code, daemon.output()


async def test_sigterm_right_after_start_up_always_stops_the_daemon(
    tmp_path: Path, jambonz_database: str
) -> None:
    results = await asyncio.gather(
        *(_start_and_stop(tmp_path / f"d{i}", jambonz_database) for i in range(DAEMONS))
    )
    for code, output in results:
        assert code == 0, output[-2000:]
        assert "sipwatch stopped" in output
        assert "stages did not stop in time" not in output
