"""Command line: subcommands and flags, each flag defaulting from an environment variable."""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eventscaler.daemon import DEFAULT_RELOAD_INTERVAL, DEFAULT_WORKERS
from eventscaler.target_views import DEFAULT_RESYNC_SECONDS

COMMANDS = ("run", "validate", "status", "simulate", "tune", "convert")
# Commands that build the daemon, so take every `run` flag.
DAEMON_COMMANDS = ("run", "status")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Flag:
    """One `run` option: its flag, the environment variable it defaults from, and its default."""

    flag: str
    env: str
    default: str | None
    help: str
    kind: str = "str"  # "str", "bool", "int", "float", "list"
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # for numbers: the smallest value allowed


RUN_FLAGS = (
    Flag("--config", "AUTOSCALER_CONFIG", None, "rule file (YAML)"),
    Flag("--kubeconfig", "AUTOSCALER_KUBECONFIG", None,
         "kubeconfig file; default: in-cluster service account in a pod, else KUBECONFIG, "
         "else ~/.kube/config"),
    Flag("--context", "AUTOSCALER_CONTEXT", None, "kubeconfig context"),
    Flag("--once", "AUTOSCALER_ONCE", "false",
         "evaluate every rule once and exit (non-zero if any rule failed)", "bool"),
    Flag("--dry-run", "AUTOSCALER_DRY_RUN", "false",
         "decide and log, but never write to the cluster", "bool"),
    Flag("--log-level", "AUTOSCALER_LOG_LEVEL", "INFO", "log level", choices=LOG_LEVELS),
    Flag("--log-format", "AUTOSCALER_LOG_FORMAT", "text", "log format", choices=("text", "json")),
    Flag("--namespaces", "AUTOSCALER_NAMESPACES", None,
         "comma-separated allow-list: rules for other namespaces are refused", "list"),
    Flag("--reload-interval", "AUTOSCALER_RELOAD_INTERVAL", str(DEFAULT_RELOAD_INTERVAL),
         "seconds between checks of the rule file for changes", "float"),
    Flag("--workers", "AUTOSCALER_WORKERS", str(DEFAULT_WORKERS),
         "rules evaluated at the same time", "int"),
    Flag("--queue-timeout", "AUTOSCALER_QUEUE_TIMEOUT", "5",
         "seconds before a source read (queue, query...) gives up", "float"),
    Flag("--api-timeout", "AUTOSCALER_API_TIMEOUT", "10",
         "seconds before a Kubernetes API call gives up", "float"),
    Flag("--target-resync", "AUTOSCALER_TARGET_RESYNC", f"{DEFAULT_RESYNC_SECONDS:g}",
         "seconds a quiet tick may decide on the scale target as read on an earlier tick (its "
         "replicas, its pause annotations): a change made by hand is noticed within this time, "
         "and every write reads the target first; 0: read it on every tick", "float",
         minimum=0),
    Flag("--health-host", "AUTOSCALER_HEALTH_HOST", "127.0.0.1",
         "address of the /healthz and /readyz endpoints (0.0.0.0 in a pod)"),
    Flag("--health-port", "AUTOSCALER_HEALTH_PORT", "8080",
         "port of the health endpoints (0: any free port, -1: off)", "int"),
    Flag("--leader-elect", "AUTOSCALER_LEADER_ELECT", "false",
         "run several replicas safely: only the holder of a Lease scales", "bool"),
    Flag("--lease-name", "AUTOSCALER_LEASE_NAME", "eventscaler", "name of the Lease"),
    Flag("--lease-namespace", "AUTOSCALER_LEASE_NAMESPACE", None,
         "namespace of the Lease (default: POD_NAMESPACE, else default)"),
    Flag("--lease-duration", "AUTOSCALER_LEASE_DURATION", "15",
         "seconds a Lease stays valid without renewal; a successor takes over after it", "float"),
    Flag("--identity", "AUTOSCALER_IDENTITY", None,
         "this replica's name in the Lease (default: POD_NAME, else host name and pid)"),
)  # fmt: skip


class UsageError(Exception):
    """A flag or environment variable has a value that cannot be used."""


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscaler.py",
        description="Event-driven autoscaler for Kubernetes workloads: scales on event sources "
        "(queues, lag, queries), to and from zero, through the scale subresource. `run` is the "
        "default command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the autoscaler (default)",
        description="Run the autoscaler. Every flag defaults from the environment variable "
        "named after it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag in RUN_FLAGS:
        _add_flag(run, flag, environ)
    _add_status_parser(commands, environ)
    _add_validate_parser(commands, environ)
    _add_simulate_parser(commands)
    _add_tune_parser(commands)
    convert = commands.add_parser(
        "convert",
        help="KEDA ScaledObjects -> a rule file on stdout; what was not converted on stderr",
    )
    convert.add_argument("file", help="YAML with one or more ScaledObjects ('-' for stdin)")
    convert.add_argument(
        "--out",
        metavar="DIR",
        help="write rules.yaml, the env patch of "
        "eventscaler's Deployment and a kustomization.yaml over the manifests",
    )
    convert.add_argument(
        "--manifests",
        metavar="DIR",
        help="the manifests the overlay builds on (default: this checkout's manifests/)",
    )
    convert.add_argument(
        "--from-cluster",
        action="store_true",
        help="read the workloads' "
        "Deployments from the cluster when the input lacks them (never Secrets)",
    )
    convert.add_argument(
        "--kubeconfig",
        help="with --from-cluster: the kubeconfig (default: KUBECONFIG, then ~/.kube/config)",
    )
    convert.add_argument("--context", help="with --from-cluster: the kubeconfig context")
    return parser


Commands = argparse._SubParsersAction


def _add_status_parser(commands: Commands, environ: Mapping[str, str]) -> None:
    status = commands.add_parser(
        "status",
        help="a table of every rule: replicas, trigger values, cooldown, last scale, reason, error",
        description="Show what every rule is doing and why. Reads the running daemon's /status "
        "(--url); when no daemon answers, evaluates every rule once in dry-run instead.",
    )
    status.add_argument(
        "--url",
        default=environ.get("AUTOSCALER_STATUS_URL", "http://127.0.0.1:8080"),
        help="the daemon's health endpoint (env AUTOSCALER_STATUS_URL, default "
        "http://127.0.0.1:8080; use kubectl port-forward for one in a cluster)",
    )
    for flag in RUN_FLAGS:
        _add_flag(status, flag, environ)


def _add_validate_parser(commands: Commands, environ: Mapping[str, str]) -> None:
    validate = commands.add_parser(
        "validate",
        help="check a rule file: exit 0 and one line per rule, or exit 2 and every problem",
    )
    validate.add_argument("file", help="rule file (YAML)")
    validate.add_argument(
        "--namespaces",
        default=environ.get("AUTOSCALER_NAMESPACES"),
        help="comma-separated namespace allow-list to check against (env AUTOSCALER_NAMESPACES)",
    )


def _add_simulate_parser(commands: Commands) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="replay a scenario or a trace through a rule, with simulated workers",
        description="Replay a load through the rule's real decision code on a simulated clock "
        "and print the figures (docs/simulate.md). --compare adds the KEDA model (built from "
        "KEDA's documented semantics, not KEDA itself), no-poll (the rule's arithmetic without "
        "polling delay) and the optimum (a lower bound; needs SciPy).",
    )
    _add_replay_flags(simulate)
    simulate.add_argument("--plot", metavar="OUT.png", help="draw backlog and replicas")
    simulate.add_argument("--csv", metavar="OUT.csv", help="write the timeline, one row a second")
    simulate.add_argument(
        "--compare",
        action="store_true",
        help="also run the KEDA model and no-poll, and solve the optimum at ours' figures",
    )


def _add_tune_parser(commands: Commands) -> None:
    tune = commands.add_parser(
        "tune",
        help="the cheapest settings of a rule that meet a p95 wait, found on the simulator",
        description="Search the rule's settings (target per replica, cooldownPeriod, the "
        "scale-down and scale-up windows and policies) on the simulator, with the same load and "
        "worker model as simulate, and print the cheapest (least replica-seconds) whose p95 "
        "message wait meets --max-p95-wait, beside today's and the optimum's (needs SciPy), "
        "and the rule with them, ready to paste (docs/simulate.md).",
    )
    _add_replay_flags(tune)
    tune.add_argument(
        "--max-p95-wait",
        type=float,
        required=True,
        metavar="S",
        help="the longest 95th-percentile wait of a message allowed, in seconds",
    )
    tune.add_argument(
        "--no-optimum", action="store_true", help="skip the optimum (a linear program)"
    )


def _add_replay_flags(parser: argparse.ArgumentParser) -> None:
    """The rule, the load and the worker model: the same flags for simulate and tune."""
    # The simulator's defaults and scenario names, for --help (light modules: no matplotlib).
    from eventscaler.scenarios import SCENARIOS
    from eventscaler.simulate import DEFAULT_PROCESSING_RATE, DEFAULT_STARTUP_SECONDS

    parser.add_argument("--config", required=True, help="rule file (YAML)")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--scenario", choices=list(SCENARIOS), help="a built-in scenario")
    load.add_argument("--trace", help="a CSV of time,messages arriving (docs/simulate.md)")
    parser.add_argument("--rule", help="the rule to use (needed if the file has several)")
    parser.add_argument(
        "--processing-rate",
        type=float,
        default=DEFAULT_PROCESSING_RATE,
        help=f"messages/s each ready replica processes (default {DEFAULT_PROCESSING_RATE:g})",
    )
    parser.add_argument(
        "--startup-seconds",
        type=float,
        default=DEFAULT_STARTUP_SECONDS,
        help=f"seconds from creation to ready for a new replica "
        f"(default {DEFAULT_STARTUP_SECONDS:g})",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds to simulate (default: the scenario's)"
    )
    parser.add_argument(
        "--initial-replicas", type=int, help="replicas at t=0 (default: minReplicas)"
    )


def _add_flag(parser: argparse.ArgumentParser, flag: Flag, environ: Mapping[str, str]) -> None:
    raw = environ.get(flag.env, flag.default)
    shown = f"(env {flag.env}" + (f", default {flag.default})" if flag.default else ")")
    if flag.kind == "bool":
        parser.add_argument(
            flag.flag,
            action="store_true",
            default=_parse_bool(raw, flag.env),
            help=f"{flag.help} {shown}",
        )
        return
    parser.add_argument(
        flag.flag,
        default=raw,
        choices=flag.choices or None,
        help=f"{flag.help} {shown}",
        type=functools.partial(_convert, flag=flag),
    )


def _parse_bool(raw: str | None, env: str) -> bool:
    word = (raw or "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UsageError(f"{env}: expected true or false, got {raw!r}")


def _convert(value: str, flag: Flag) -> object:
    try:
        if flag.kind == "int":
            return int(value)
        if flag.kind == "float":
            return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if flag.kind == "list":
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value.upper() if flag.choices == LOG_LEVELS else value


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Parse the command line; `run` is implied when no subcommand is given."""
    environ = os.environ if environ is None else environ
    args = list(argv)
    if not args or (args[0] not in COMMANDS and args[0] not in ("-h", "--help")):
        args.insert(0, "run")
    parser = build_parser(environ)
    namespace = parser.parse_args(args)
    # Environment defaults bypass argparse's own conversion; convert them the same way.
    if namespace.command in DAEMON_COMMANDS:
        for flag in RUN_FLAGS:
            dest = flag.flag.lstrip("-").replace("-", "_")
            value = getattr(namespace, dest)
            if isinstance(value, str) and flag.kind != "str":
                try:
                    setattr(namespace, dest, _convert(value, flag))
                except argparse.ArgumentTypeError as exc:
                    parser.error(f"{flag.env}: {exc}")
            if flag.choices and getattr(namespace, dest) not in flag.choices:
                parser.error(f"{flag.env}: expected one of {', '.join(flag.choices)}")
            value = getattr(namespace, dest)
            if flag.minimum is not None and value is not None and value < flag.minimum:
                parser.error(f"{flag.flag} ({flag.env}): expected at least {flag.minimum:g}, "
                             f"got {value:g}")  # fmt: skip
        if not namespace.config:
            parser.error("a rule file is required: --config FILE or AUTOSCALER_CONFIG")
    elif namespace.command == "validate" and isinstance(namespace.namespaces, str):
        namespace.namespaces = _convert(namespace.namespaces, Flag("", "", None, "", "list"))
    return namespace
