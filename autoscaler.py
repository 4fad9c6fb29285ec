#!/usr/bin/env python3
"""eventscaler's entry point: parse the command line, build every client once, run.

    python autoscaler.py run --config rules.yaml [--kubeconfig FILE] [--once] [--dry-run]
    python autoscaler.py validate rules.yaml

`python autoscaler.py --help` lists every flag and the environment variable it defaults from.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from eventscaler.cli import UsageError, parse_args
from eventscaler.config import describe_rule, load_rules

logger = logging.getLogger("eventscaler")

EXIT_OK = 0
EXIT_RULE_FAILED = 1
EXIT_INVALID = 2


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"autoscaler.py: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.command == "validate":
        return validate(args.file, args.namespaces or None)
    return run(args)


def validate(path: str, namespaces: Sequence[str] | None) -> int:
    result = load_rules(path, namespaces)
    if result.ok:
        for rule in result.rules:
            print(describe_rule(rule))
        print(f"{path}: {len(result.rules)} rule(s), valid")
        return EXIT_OK
    for problem in result.problems:
        print(problem, file=sys.stderr)
    print(f"{path}: {len(result.problems)} problem(s)", file=sys.stderr)
    return EXIT_INVALID


def run(args: argparse.Namespace) -> int:
    # Imported here so `validate` and `--help` stay fast and need no cluster libraries.
    from eventscaler.daemon import Daemon, RuleFileWatcher
    from eventscaler.engine import Engine
    from eventscaler.kube import ClusterAccess, DeploymentScaler, KubeError, build_api_client
    from eventscaler.logs import setup_logging
    from eventscaler.sources.azure_queue import AzureQueueSource

    setup_logging(args.log_level, args.log_format)
    access = ClusterAccess(args.kubeconfig, args.context)
    try:
        api_client = build_api_client(access, pool_size=args.workers)
    except KubeError as exc:
        logger.error("%s", exc)
        return EXIT_INVALID
    source = AzureQueueSource(timeout_seconds=args.queue_timeout, pool_size=args.workers)
    scaler = DeploymentScaler(api_client, timeout_seconds=args.api_timeout)
    engine = Engine(source, scaler, dry_run=args.dry_run)
    watcher = RuleFileWatcher(args.config, args.namespaces or None)
    daemon = Daemon(engine, watcher, workers=args.workers, reload_interval=args.reload_interval)
    logger.info(
        "eventscaler starting: rules %s, cluster via %s%s",
        args.config,
        access.describe(),
        ", DRY RUN (no writes)" if args.dry_run else "",
    )
    try:
        if args.once:
            outcomes = daemon.run_once()
            failed = [o.rule for o in outcomes if o.failed]
            logger.info("evaluated %d rule(s) once, %d failed", len(outcomes), len(failed))
            problems = daemon.health.last_load_error is not None
            return EXIT_RULE_FAILED if failed or problems else EXIT_OK
        return run_until_signalled(daemon)
    finally:
        source.close()
        api_client.close()


def run_until_signalled(daemon: object) -> int:
    from eventscaler.daemon import Daemon

    assert isinstance(daemon, Daemon)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: finishing the runs in progress", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    daemon.start()
    stop.wait()
    daemon.stop()
    logger.info("stopped")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
