"""Logging set-up: text or JSON lines on stderr, secrets redacted, noisy libraries quietened."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from eventscaler.redact import RedactingFilter

# Fields that callers attach with `extra=` and that JSON output carries as its own keys.
CONTEXT_FIELDS = (
    "rule",
    "namespace",
    "target_kind",
    "target",
    "from_replicas",
    "to_replicas",
    "step",
    "dry_run",
)
QUIET_LOGGERS = ("apscheduler", "kubernetes", "urllib3", "azure")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines in the cluster."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Their INFO lines (one per job run, per HTTP request) would drown the decisions.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
