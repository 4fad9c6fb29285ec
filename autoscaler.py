#!/usr/bin/env python3
"""eventscaler's entry point: parse the command line, build every client once, run.

    python autoscaler.py run --config rules.yaml [--kubeconfig FILE] [--once] [--dry-run]
    python autoscaler.py validate rules.yaml
    python autoscaler.py simulate --config rules.yaml --scenario flood [--compare] [--plot OUT.png]
    python autoscaler.py tune --config rules.yaml --trace day.csv --max-p95-wait 60
    python autoscaler.py convert scaledobjects.yaml > rules.yaml

`python autoscaler.py --help` lists every flag and the environment variable it defaults from.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from eventscaler.cli import UsageError, parse_args
from eventscaler.config import describe_rule, load_rules

if TYPE_CHECKING:
    from eventscaler.daemon import Daemon
    from eventscaler.events import EventReporter
    from eventscaler.health import HealthServer
    from eventscaler.kube import ApiClient
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
    if args.command == "status":
        return status(args)
    if args.command == "simulate":
        from eventscaler.simulate import run_simulate_command

        return run_simulate_command(args)
    if args.command == "tune":
        from eventscaler.tune import run_tune_command

        return run_tune_command(args)
    if args.command == "convert":
        from eventscaler.convert import run_convert_command

        return run_convert_command(args)
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
    stop = install_stop_signals()
    parts = build(args)
    if parts is None:
        return EXIT_INVALID
    try:
        if args.once:
            return run_once(parts.daemon)
        health = parts.health_server(args) if args.health_port >= 0 else None
        try:
            return run_until_signalled(parts.daemon, parts.elector, stop)
        finally:
            if health is not None:
                health.stop()
    finally:
        parts.close()


def run_once(daemon: Daemon) -> int:
    outcomes = daemon.run_once()
    failed = [o.rule for o in outcomes if o.failed]
    logger.info("evaluated %d rule(s) once, %d failed", len(outcomes), len(failed))
    problems = daemon.health.last_load_error is not None
    return EXIT_RULE_FAILED if failed or problems else EXIT_OK


def status(args: argparse.Namespace) -> int:
    """Print every rule's state: the running daemon's, or else one dry-run evaluation."""
    from eventscaler.status import render_reasons, render_table

    rows, origin = fetch_daemon_status(args.url), f"from the daemon at {args.url}"
    if rows is None:
        origin = "evaluated once now in dry-run (no daemon answered at " + args.url + ")"
        args.dry_run, args.once, args.leader_elect = True, True, False
        args.log_level = "ERROR" if args.log_level == "INFO" else args.log_level
        parts = build(args)
        if parts is None:
            return EXIT_INVALID
        try:
            parts.daemon.run_once()
        finally:
            parts.close()
        rows = parts.board.snapshot()
    print(render_table(rows))
    print(f"\n{len(rows)} rule(s), {origin}. Reasons:")
    print(render_reasons(rows))
    return EXIT_RULE_FAILED if any(row.get("error") for row in rows) else EXIT_OK


def fetch_daemon_status(url: str) -> list[dict[str, Any]] | None:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=3) as response:
            return list(json.load(response)["rules"])
    except (OSError, ValueError, KeyError):
        return None


class Parts:
    """Everything `run` builds once: clients, engine, daemon, reporters."""

    def __init__(self, args: argparse.Namespace) -> None:
        from eventscaler.daemon import Daemon, RuleFileWatcher
        from eventscaler.engine import Engine, Observer
        from eventscaler.kube import ClusterAccess, ScaleTargetClient, build_api_client
        from eventscaler.metrics import Metrics
        from eventscaler.sources.base import SourceOptions
        from eventscaler.sources.pool import SourcePool
        from eventscaler.status import StatusBoard

        self.access = ClusterAccess(args.kubeconfig, args.context)
        self.api_client = build_api_client(self.access, pool_size=api_connections(args.workers))
        self.identity = replica_identity(args)
        options = SourceOptions(timeout_seconds=args.queue_timeout, pool_size=args.workers)
        self.source = SourcePool(options)
        self.scaler = ScaleTargetClient(self.api_client, timeout_seconds=args.api_timeout)
        self.metrics = Metrics()
        self.board = StatusBoard()
        events = self._event_reporter(args)
        observers: list[Observer] = [self.metrics, self.board, events]
        engine = Engine(self.source, self.scaler, dry_run=args.dry_run, observers=observers,
                        target_resync=args.target_resync)  # fmt: skip
        watcher = RuleFileWatcher(args.config, args.namespaces or None)
        self.elector = None
        if args.leader_elect and not args.once:
            self.elector = build_elector(args, self.api_client, self.identity)
        self.daemon = Daemon(
            engine,
            watcher,
            workers=args.workers,
            reload_interval=args.reload_interval,
            is_leader=self.elector.is_leader if self.elector else lambda: True,
            listeners=[self.metrics, self.board, events],
        )

    def _event_reporter(self, args: argparse.Namespace) -> EventReporter:
        """Events leave the tick at once: one thread sends them from a bounded queue."""
        from eventscaler.events import EventReporter, EventSender
        from eventscaler.kube import EventRecorder

        self.event_sender = EventSender(on_drop=self.metrics.event_dropped)
        recorder = EventRecorder(self.api_client, self.identity, args.api_timeout)
        return EventReporter(recorder, sender=self.event_sender)

    def health_server(self, args: argparse.Namespace) -> HealthServer:
        from eventscaler.health import ApiCheck, HealthServer
        from eventscaler.metrics import CONTENT_TYPE

        routes = {
            "/metrics": lambda: (200, CONTENT_TYPE, self.metrics.exposition()),
            "/status": lambda: (200, "application/json", self.board.to_json()),
        }
        api_check = ApiCheck(self.scaler.check_reachable)
        health = self.daemon.health
        return HealthServer(args.health_host, args.health_port, health, api_check, routes).start()

    def close(self) -> None:
        self.event_sender.close()  # first: the queued events need the API client
        self.source.close()
        self.api_client.close()


def api_connections(workers: int) -> int:
    """Pooled connections to the API server: one per thread that may call it at once (the
    workers, the event sender, the leader elector, the readiness check), so none opens and
    throws away a connection of its own (a TLS handshake each time)."""
    return workers + 3


def build(args: argparse.Namespace) -> Parts | None:
    from eventscaler.kube import KubeError
    from eventscaler.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    try:
        parts = Parts(args)
    except KubeError as exc:
        logger.error("%s", exc)
        return None
    logger.info(
        "eventscaler starting: rules %s, cluster via %s%s",
        args.config,
        parts.access.describe(),
        ", DRY RUN (no writes)" if args.dry_run else "",
    )
    return parts


def replica_identity(args: argparse.Namespace) -> str:
    fallback = f"{socket.gethostname()}-{os.getpid()}"
    return args.identity or os.environ.get("POD_NAME") or fallback


def build_elector(args: argparse.Namespace, api_client: ApiClient, identity: str) -> LeaderElector:
    from eventscaler.kube import LeaseClient
    from eventscaler.leader import LeaderElector

    namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE") or "default"
    duration = args.lease_duration
    lease = LeaseClient(api_client, namespace, args.lease_name, timeout_seconds=duration / 3)
    # client-go's proportions (15 s / 10 s / 2 s), kept for any duration.
    return LeaderElector(lease, identity, duration, duration * 2 / 3, duration * 2 / 15)


class StopRequest(threading.Event):
    """Set by SIGTERM or SIGINT; `signal_name` says which."""

    signal_name = ""


def install_stop_signals() -> StopRequest:
    """SIGTERM and SIGINT set the returned event; installed first, so no signal kills a tick.

    The handler only sets the event: it logs nothing, since a handler that logs can block on, or
    re-enter, the log stream the interrupted code was writing to. SIGUSR1 dumps every thread's
    stack to stderr (faulthandler), for a daemon that seems stuck."""
    stop = StopRequest()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.signal_name = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return stop


def run_until_signalled(daemon: Daemon, elector: LeaderElector | None, stop: StopRequest) -> int:
    if elector is not None:
        logger.info("leader election on: I am %s", elector.identity)
        elector.start()
    daemon.start()
    # A timed wait, not a bare one: the main thread wakes twice a second, so a SIGTERM's handler
    # runs even if the wait itself is not woken by the signal.
    while not stop.wait(0.5):
        pass
    logger.info("received %s: finishing the runs in progress", stop.signal_name or "a stop")
    daemon.stop()
    if elector is not None:
        elector.stop()  # after the last run, so no write can follow the release
    logger.info("stopped")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
