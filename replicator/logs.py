"""How the replicator's lines are written: plain text (the default) or one JSON object a line.

A JSON line has `time` (UTC, ISO 8601), `level`, `logger`, `direction`, `member` and `message`,
and `topic`, `partition` and `offset` where the line is about one (given as `extra=` by the
call, see `at`). A process runs one member at most (`replicate`, a Ray actor), so the
direction and member are the process's, set once with `set_member`; a line may carry its own.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("topic", "partition", "offset")

_member: dict[str, str | None] = {"direction": None, "member": None}


def set_member(direction: str | None, member: str | None) -> None:
    """The direction and member this process runs: every JSON line carries them."""
    _member.update(direction=direction, member=member)


def at(topic: str, partition: int, offset: int | None = None) -> dict:
    """`extra=` of a line about one partition (and offset)."""
    fields = {"topic": topic, "partition": partition}
    if offset is not None:
        fields["offset"] = offset
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "direction": getattr(record, "direction", None) or _member["direction"],
            "member": getattr(record, "member", None) or _member["member"],
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT)


def configure(level: str = "INFO", log_format: str = "text", replace: bool = False) -> None:
    """The root logger writes to stderr at `level`, in `log_format`; `replace`: instead of
    the handlers it has (a Ray worker's), else only if it has none (as logging.basicConfig)."""
    root = logging.getLogger()
    if replace or not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter(log_format))
        root.handlers = [handler]
    root.setLevel(level.upper())
    # kafka-python's INFO lines repeat ours; its warnings and errors still show.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
