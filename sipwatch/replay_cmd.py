"""``sipwatch replay``: read logs once, print a report (text, JSON or Prometheus exposition)."""

from __future__ import annotations

import argparse
import os
import sys

from sipwatch.metrics import SipwatchMetrics, render_text
from sipwatch.replay import replay_paths
from sipwatch.report import render_json
from sipwatch.report import render_text as render_report

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def run_replay(args: argparse.Namespace) -> int:
    for path in args.files:
        if path != "-" and not os.path.isfile(path):
            print(f"sipwatch replay: cannot read {path!r}: no such file", file=sys.stderr)
            return EXIT_UNAVAILABLE
    metrics = SipwatchMetrics(process_metrics=False) if args.format == "prometheus" else None
    try:
        res = replay_paths(args.files, tz_offset=args.tz_offset * 3600.0, metrics=metrics)
    except OSError as exc:
        print(f"sipwatch replay: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if metrics is not None:
        sys.stdout.write(render_text(metrics.registry))
        return EXIT_OK
    causes = None
    if not args.no_diagnose:
        from sipwatch.config import ConfigError, load_config
        from sipwatch.diagnosis.db import DbError
        from sipwatch.replay_diagnosis import diagnose_replay

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"sipwatch replay: invalid configuration:\n{exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            causes = diagnose_replay(
                res, config=config, db_url=args.db_url, redis_url=args.redis_url
            )
        except DbError as exc:  # the report is still useful: print it without causes
            print(f"sipwatch replay: database: {exc}", file=sys.stderr)
    if args.format == "json":
        sys.stdout.write(render_json(res, causes))
    else:
        sys.stdout.write(render_report(res, causes, limit=args.limit))
    return EXIT_OK
