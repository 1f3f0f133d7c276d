"""``sipwatch run``: the asyncio driver of the pipeline core and what a daemon adds to it.

``driver`` (the ``Daemon``: sources, queues, clock, HTTP, signals), ``stages`` (building
diagnosis, alerting and remediation from the configuration), ``health`` (the truth about each
log source) and ``dependencies`` (the database and Redis: lost and back, said once).
"""

from sipwatch.daemon.driver import Daemon, ListenError, run_daemon

__all__ = ["Daemon", "ListenError", "run_daemon"]
