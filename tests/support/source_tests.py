"""What the tests of every source share (docs/sources.md's checklist): one trigger loaded through
the rule loader, the commented example of config.example.yaml, the import-only-when-used check,
`validate` on a misspelt field, and the real daemon for end-to-end runs."""

from __future__ import annotations

import itertools
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from eventscaler.config import parse_rules_text
from eventscaler.triggers import Trigger
from tests.support.daemon_process import REPO_ROOT, DaemonProcess, run_command

POLL = 0.5  # seconds: short periods keep the end-to-end tests fast
COOLDOWN = 3.0


def load_trigger(trigger: dict[str, Any]) -> tuple[list[str], Trigger | None]:
    """The problems of a one-rule file with `trigger`, and the trigger when it loads."""
    text = yaml.safe_dump({"rules": [{"name": "r", "deployment": "d", "triggers": [trigger]}]})
    result = parse_rules_text(text, "rules.yaml")
    loaded = result.rules[0].triggers[0] if result.rules else None
    return [str(p) for p in result.problems], loaded


def commented_example(source_type: str) -> str:
    """The rule under `# Example, type X` in config.example.yaml, uncommented, as a file."""
    lines = (REPO_ROOT / "config.example.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if f"# Example, type {source_type} " in line)
    block = itertools.takewhile(str.strip, lines[start + 1 :])
    return "rules:\n" + "\n".join(line.replace("  # ", "  ", 1) for line in block) + "\n"


def sdk_loaded(sdk: str, trigger: str) -> tuple[bool, bool]:
    """Whether `sdk` is imported (in a fresh interpreter) after loading an azure-queue rule, and
    after loading a rule with `trigger` (a YAML flow mapping)."""
    script = textwrap.dedent(
        f"""
        import sys
        from eventscaler.config import parse_rules_text
        rule = "rules: [{{name: r, deployment: d, triggers: [%s]}}]"
        parse_rules_text(rule % "{{type: azure-queue, queueName: q-q}}", "azure.yaml")
        before = {sdk!r} in sys.modules
        parse_rules_text(rule % {trigger!r}, "other.yaml")
        print(before, {sdk!r} in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    before, after = done.stdout.split()
    return before == "True", after == "True"


def validate_error(tmp_path: Path, trigger: dict[str, Any]) -> str:
    """`validate`'s stderr for a one-rule file (rule `orders`) with `trigger`; exit code 2."""
    path = tmp_path / "rules.yaml"
    rule = {"name": "orders", "deployment": "orders", "triggers": [trigger]}
    path.write_text(yaml.safe_dump({"rules": [rule]}, sort_keys=False))
    result = run_command(["validate", str(path)])
    assert result.returncode == 2, result.stdout
    return result.stderr.replace(str(path), "rules.yaml")


def e2e_rule(name: str, namespace: str, trigger: dict[str, Any]) -> dict[str, Any]:
    """A rule scaling Deployment `name` 0..20 on `trigger`, every POLL, cooling down in COOLDOWN."""
    return {
        "name": name,
        "namespace": namespace,
        "deployment": name,
        "minReplicas": 0,
        "maxReplicas": 20,
        "pollingInterval": POLL,
        "cooldownPeriod": COOLDOWN,
        "triggers": [trigger],
    }


def count_lines(daemon: DaemonProcess, pattern: str) -> int:
    return len(re.findall(pattern, daemon.output))


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
