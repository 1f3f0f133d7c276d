"""``sipwatch replay``: read logs once, print a report (text, JSON or Prometheus exposition)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from sipwatch.cli.exit_codes import ExitCode, help_epilog
from sipwatch.replay.driver import replay_paths
from sipwatch.replay.report import render_json
from sipwatch.replay.report import render_text as render_report

if TYPE_CHECKING:
    from sipwatch.cli.main import SubParsers


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "replay",
        help="analyse drachtio / registrar log files once and report failing registrations",
        description=(
            "Read drachtio-server logs (plain, docker logs -t, docker compose logs, pm2, "
            "kubectl, pre-2017 format; .gz too) and registrar pino logs, reassemble REGISTER "
            "transactions and report failures with their likely cause."
        ),
        epilog="""\
examples:
  sipwatch replay examples/drachtio-sbc.log examples/sbc-sip-sidecar.log
  sipwatch replay --format json /var/log/drachtio/drachtio.log.1.gz
  docker compose logs drachtio-sbc registrar | sipwatch replay -
  sipwatch replay --format prometheus drachtio.log   # metrics exposition after the replay

"""
        + help_epilog("replay"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="log files; - reads stdin")
    p.add_argument(
        "--format",
        choices=("text", "json", "prometheus"),
        default="text",
        help="output format (default: text)",
    )
    p.add_argument(
        "--tz-offset",
        type=float,
        default=None,
        metavar="HOURS",
        help="UTC offset of drachtio's timestamps if the container is not on UTC (e.g. 2 or "
        "-5.5; default: sources.timezone of the config, UTC)",
    )
    p.add_argument(
        "--no-diagnose", action="store_true", help="skip the root-cause rules (faster on huge logs)"
    )
    p.add_argument(
        "--db-url",
        default=None,
        help="jambonz MySQL URL to confirm causes (default: $SIPWATCH_DB_URL; unset = log only)",
    )
    p.add_argument(
        "--redis-url", default=None, help="jambonz Redis URL (default: $SIPWATCH_REDIS_URL)"
    )
    p.add_argument(
        "--config",
        default=None,
        help="sipwatch.toml: the same [sip], [sources] timezone, [diagnosis] and database settings "
        "as `sipwatch run` (default: $SIPWATCH_CONFIG or none)",
    )
    p.add_argument("--limit", type=int, default=50, help="rows in the text table (default 50)")
    p.set_defaults(handler=run_replay)


def run_replay(args: argparse.Namespace) -> ExitCode:
    from sipwatch.config import ConfigError, load_config
    from sipwatch.pipeline.core import PipelineSettings

    for path in args.files:
        if path != "-" and not os.path.isfile(path):
            print(f"sipwatch replay: cannot read {path!r}: no such file", file=sys.stderr)
            return ExitCode.UNAVAILABLE
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"sipwatch replay: invalid configuration:\n{exc}", file=sys.stderr)
        return ExitCode.USAGE
    tz = args.tz_offset * 3600.0 if args.tz_offset is not None else None
    settings = PipelineSettings.from_config(config, tz_offset=tz)
    metrics = None
    if args.format == "prometheus":  # prometheus_client only when asked: 45 ms of startup
        from sipwatch.metrics import SipwatchMetrics

        metrics = SipwatchMetrics(process_metrics=False)
    try:
        res = replay_paths(args.files, settings=settings, metrics=metrics)
    except OSError as exc:
        print(f"sipwatch replay: {exc}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if metrics is not None:
        from sipwatch.metrics import render_text

        sys.stdout.write(render_text(metrics.registry))
        return ExitCode.OK
    causes = None
    code = ExitCode.OK
    if not args.no_diagnose:
        from sipwatch.replay.diagnosis import diagnose_replay

        causes, problem = diagnose_replay(
            res, config=config, db_url=args.db_url, redis_url=args.redis_url
        )
        if problem:  # the report is still useful: print it, with log-only causes
            print(f"sipwatch replay: {problem}; causes are from the log only", file=sys.stderr)
            code = ExitCode.UNAVAILABLE
    if args.format == "json":
        sys.stdout.write(render_json(res, causes))
    else:
        sys.stdout.write(render_report(res, causes, limit=args.limit))
    return code
