"""The probes' port: /healthz (live), /readyz (ready) and, where there are metrics, /metrics.

Each check is a callable that returns what is wrong, one line per problem: an empty list
answers 200 `ok`, anything else 503 with the lines, so that `kubectl describe pod` and a
curl by hand say why.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from .errors import PortUnavailable

log = logging.getLogger(__name__)

Check = Callable[[], list[str]]


@dataclass(frozen=True)
class Exposition:
    """What /metrics answers: Prometheus' text format and its content type."""

    content_type: str
    body: Callable[[], bytes]


class Endpoint:
    """An HTTP server on its own daemon thread; close() stops it."""

    def __init__(self, host: str, port: int, live: Check, ready: Check,
                 metrics: Exposition | None = None):
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/healthz": lambda: _verdict(live()),
            "/readyz": lambda: _verdict(ready()),
        }
        if metrics is not None:
            routes["/metrics"] = lambda: (200, metrics.content_type, metrics.body())
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(routes))
        except OSError as exc:
            raise PortUnavailable(host, port, exc.strerror or str(exc)) from None
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="probes", daemon=True)
        self._thread.start()
        log.info("serving %s on http://%s:%d", ", ".join(sorted(routes)), host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _verdict(problems: list[str]) -> tuple[int, str, bytes]:
    if problems:
        return 503, "text/plain; charset=utf-8", ("\n".join(problems) + "\n").encode()
    return 200, "text/plain; charset=utf-8", b"ok\n"


def _handler(routes: dict[str, Callable[[], tuple[int, str, bytes]]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
            else:
                try:
                    status, content_type, body = route()
                except Exception as exc:  # a probe must answer, and say why it cannot
                    log.exception("probe %s failed", self.path)
                    status, content_type, body = 503, "text/plain; charset=utf-8", \
                        f"the check failed: {type(exc).__name__}: {exc}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args) -> None:  # noqa: A002 (http.server's name)
            # Probes every few seconds would bury the replicator's own lines.
            pass

    return Handler
