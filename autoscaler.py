#!/usr/bin/env python3
"""eventscaler's entry point: parse the command line, build every client once, run.

    python autoscaler.py run --config rules.yaml [--kubeconfig FILE] [--once] [--dry-run]
    python autoscaler.py validate rules.yaml

`python autoscaler.py --help` lists every flag and the environment variable it defaults from.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from eventscaler.cli import UsageError, parse_args
from eventscaler.config import describe_rule, load_rules

if TYPE_CHECKING:
    from eventscaler.daemon import Daemon
    from eventscaler.leader import LeaderElector

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
    from eventscaler.health import ApiCheck, HealthServer
    from eventscaler.kube import ClusterAccess, DeploymentScaler, KubeError, build_api_client
    from eventscaler.logs import setup_logging
    from eventscaler.sources.azure_queue import AzureQueueSource

    stop = install_stop_signals()
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
    elector = None if args.once or not args.leader_elect else build_elector(args, api_client)
    daemon = Daemon(
        engine,
        watcher,
        workers=args.workers,
        reload_interval=args.reload_interval,
        is_leader=elector.is_leader if elector else lambda: True,
    )
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
        health = None
        if args.health_port >= 0:
            health = HealthServer(
                args.health_host, args.health_port, daemon.health, ApiCheck(scaler.check_reachable)
            ).start()
        try:
            return run_until_signalled(daemon, elector, stop)
        finally:
            if health is not None:
                health.stop()
    finally:
        source.close()
        api_client.close()


def build_elector(args: argparse.Namespace, api_client: object) -> LeaderElector:
    from eventscaler.kube import LeaseClient
    from eventscaler.leader import LeaderElector

    namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE") or "default"
    identity = (
        args.identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    )
    duration = args.lease_duration
    lease = LeaseClient(api_client, namespace, args.lease_name, timeout_seconds=duration / 3)
    # client-go's proportions (15 s / 10 s / 2 s), kept for any duration.
    return LeaderElector(lease, identity, duration, duration * 2 / 3, duration * 2 / 15)


def install_stop_signals() -> threading.Event:
    """SIGTERM and SIGINT set the returned event; installed first, so no signal kills a tick."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: finishing the runs in progress", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def run_until_signalled(
    daemon: Daemon, elector: LeaderElector | None, stop: threading.Event
) -> int:
    if elector is not None:
        logger.info("leader election on: I am %s", elector.identity)
        elector.start()
    daemon.start()
    stop.wait()
    daemon.stop()
    if elector is not None:
        elector.stop()  # after the last run, so no write can follow the release
    logger.info("stopped")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
