"""Keep secrets out of logs: sources register what they read, log handlers redact it.

Sources call `register_secret` with every secret value they read (connection strings, account
keys, SAS tokens) before using it, so that any later log line or traceback that happens to carry
one, an SDK error echoing a URL for example, shows `***` instead.
"""

from __future__ import annotations

import logging
import threading

REDACTED = "***"

# Shorter values would redact ordinary words and numbers all over the logs.
MIN_SECRET_LENGTH = 8

_lock = threading.Lock()
# Longest first, so a connection string is replaced whole before the key inside it. Readers take
# the tuple without the lock: rebinding a name is atomic and the tuple itself never changes.
_secrets: tuple[str, ...] = ()


# Short-lived secrets (access tokens, refreshed about hourly) are kept only while recent: keeping
# every token ever seen would grow the list, and the cost of each redaction, for the daemon's life.
MAX_EPHEMERAL_SECRETS = 16
_lasting: tuple[str, ...] = ()
_ephemeral: tuple[str, ...] = ()


def register_secret(value: str, ephemeral: bool = False) -> None:
    """Remember `value` so `redact` hides it from now on; values under 8 characters are ignored.

    `ephemeral` secrets (tokens) are forgotten once MAX_EPHEMERAL_SECRETS newer ones came.
    """
    global _secrets, _lasting, _ephemeral
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        if ephemeral:
            _ephemeral = (*_ephemeral, value)[-MAX_EPHEMERAL_SECRETS:]
        else:
            _lasting = (*_lasting, value)
        _secrets = tuple(sorted({*_lasting, *_ephemeral}, key=len, reverse=True))


def redact(text: str) -> str:
    """Return `text` with every registered secret replaced by `***`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Redact registered secrets from a record's message, arguments and traceback.

    Attach it to handlers, not loggers: a logger's filters do not see records that propagate
    from its child loggers (the SDK logs under `azure.*`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # Format first: a secret may only appear once the arguments are merged into the message.
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            # Formatter.format() reuses exc_text when set, so the traceback is redacted too.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


MAX_REASON_LENGTH = 200


def first_line(text: str, limit: int = MAX_REASON_LENGTH) -> str:
    """The first line of a client library's message (some run to pages), redacted, truncated."""
    lines = text.strip().splitlines()
    reason = redact(lines[0].strip()) if lines else ""
    if len(reason) > limit:
        reason = reason[: limit - 3] + "..."
    return reason
