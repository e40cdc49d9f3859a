"""The HTTP receiver for MLflow webhook deliveries.

The handler only checks, parses and stores. It reads at most `max_body_bytes`, verifies the
HMAC signature, rejects stale timestamps and replayed delivery ids, and commits the job to the
queue before it responds. The evaluation runs later, in the worker.

| status | when |
| --- | --- |
| 202 | a job was queued, or the event merged into a pending job |
| 200 | a valid delivery that triggers nothing (another model, an untriggered alias, a test) |
| 400 | malformed JSON, or a missing or malformed timestamp or delivery id header |
| 401 | missing or wrong signature, or a timestamp more than `max_timestamp_age_s` from now |
| 404, 411, 413 | another path; no Content-Length; a body over `max_body_bytes` |
| 409 | a delivery id received before (a replay) |
| 422 | an unknown event, or a payload without the fields of its event |
| 500 | the queue could not be written; MLflow retries a 5xx delivery |
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from harness import __version__
from registry_hooks.config import GateConfig
from registry_hooks.events import RouteOutcome, parse_webhook_body, route_event
from registry_hooks.queue import DeliveryReplayed, JobQueue
from registry_hooks.signature import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryRejected,
    check_delivery_id,
    check_timestamp_age,
    parse_timestamp,
    signature_matches,
)

log = logging.getLogger(__name__)

# Seconds a client may take to send its request before the connection is closed.
_REQUEST_TIMEOUT_S = 10
# Rejections logged per minute; the rest are counted and reported in one line.
_REJECTIONS_LOGGED_PER_MINUTE = 30


class _RejectionLog:
    """Logs rejected deliveries, rate-limited, and counts them by HTTP status."""

    def __init__(self, max_per_minute: int = _REJECTIONS_LOGGED_PER_MINUTE) -> None:
        self._max_per_minute = max_per_minute
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._logged = 0
        self._suppressed = 0
        self.totals: Counter[int] = Counter()

    def record(self, status: int, reason: str, delivery_id: str | None, client: str) -> None:
        with self._lock:
            self.totals[status] += 1
            now = time.monotonic()
            if now - self._window_start >= 60:
                if self._suppressed:
                    log.warning(
                        "%d more rejected deliveries in the last minute were not logged",
                        self._suppressed,
                    )
                self._window_start, self._logged, self._suppressed = now, 0, 0
            if self._logged >= self._max_per_minute:
                self._suppressed += 1
                return
            self._logged += 1
        log.warning(
            "rejected delivery %s from %s: HTTP %d, %s", delivery_id or "-", client, status, reason
        )


class GateHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that stores verified deliveries in the job queue."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog; a burst of deliveries must not be refused

    def __init__(
        self,
        config: GateConfig,
        queue: JobQueue,
        secret: str,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.secret = secret
        self.on_queued = on_queued
        self.rejections = _RejectionLog()
        host = config.receiver.host
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, config.receiver.port), _DeliveryHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        url_host = f"[{host}]" if ":" in str(host) else host  # IPv6 literals need brackets
        return f"http://{url_host}:{port}{self.config.receiver.path}"

    def accept(self, delivery_id: str, parsed) -> RouteOutcome:
        """Record the delivery and queue what it triggers, in one transaction."""
        event_name = parsed if isinstance(parsed, str) else parsed.event
        try:
            with self.queue.transaction() as tx:
                tx.remember_delivery(delivery_id, event_name)
                if isinstance(parsed, str):
                    outcome = RouteOutcome("ignored", f"the gate does not act on {parsed}")
                else:
                    outcome = route_event(self.config, tx, parsed)
                tx.set_delivery_outcome(delivery_id, outcome.status, outcome.job_id)
        except DeliveryReplayed:
            raise DeliveryRejected(409, "replayed delivery id: it was received before") from None
        if outcome.status == "queued" and self.on_queued is not None:
            self.on_queued()
        return outcome

    def handle_error(self, request, client_address) -> None:
        # socketserver prints a traceback to stderr by default; log it instead.
        log.exception("error while handling a request from %s", client_address[0])

    def start_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread; stop with `shutdown()` and `server_close()`."""
        thread = threading.Thread(target=self.serve_forever, name="gate-receiver", daemon=True)
        thread.start()
        return thread


class _DeliveryHandler(BaseHTTPRequestHandler):
    server: GateHTTPServer
    server_version = f"latentgate-gate/{__version__}"
    timeout = _REQUEST_TIMEOUT_S

    def do_POST(self) -> None:  # noqa: N802 (the name BaseHTTPRequestHandler dispatches to)
        delivery_id = self.headers.get(DELIVERY_ID_HEADER)
        try:
            outcome = self._accept()
        except DeliveryRejected as rejected:
            self.server.rejections.record(
                rejected.status, rejected.reason, delivery_id, self.client_address[0]
            )
            self._reply(rejected.status, {"status": "rejected", "reason": rejected.reason})
            return
        except socket.timeout:
            log.warning("delivery %s from %s timed out while sending its body",
                        delivery_id or "-", self.client_address[0])
            self.close_connection = True
            return
        except Exception as error:
            log.exception("could not store delivery %s", delivery_id or "-")
            self._reply(500, {"status": "error", "reason": f"could not store the delivery: {error!r}"})
            return
        log.info("delivery %s: %s (%s)", delivery_id, outcome.status, outcome.reason)
        status = 202 if outcome.status in ("queued", "merged") else 200
        body = {"status": outcome.status, "reason": outcome.reason}
        if outcome.job_id is not None:
            body["job_id"] = outcome.job_id
        self._reply(status, body)

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/healthz":
            self._reply(404, {"status": "not found", "reason": "POST deliveries to "
                              f"{self.server.config.receiver.path}; GET /healthz for status"})
            return
        queue = self.server.queue
        self._reply(
            200,
            {
                "status": "ok",
                "queued": queue.count("queued"),
                "running": queue.count("running"),
                "rejected": {str(status): n for status, n in self.server.rejections.totals.items()},
            },
        )

    def _accept(self) -> RouteOutcome:
        settings = self.server.config.receiver
        if urlsplit(self.path).path != settings.path:
            raise DeliveryRejected(404, f"no receiver at {self.path[:100]!r}; use {settings.path}")
        body = self._read_body(settings.max_body_bytes)
        signature = self.headers.get(SIGNATURE_HEADER)
        if not signature:
            raise DeliveryRejected(401, f"missing {SIGNATURE_HEADER} header")
        delivery_id = check_delivery_id(self.headers.get(DELIVERY_ID_HEADER))
        timestamp = self.headers.get(TIMESTAMP_HEADER)
        timestamp_s = parse_timestamp(timestamp)
        if not signature_matches(self.server.secret, delivery_id, timestamp, body, signature):
            raise DeliveryRejected(
                401, "signature does not match: the webhook's secret differs from this receiver's"
            )
        check_timestamp_age(timestamp_s, settings.max_timestamp_age_s)
        return self.server.accept(delivery_id, parse_webhook_body(body))

    def _read_body(self, max_bytes: int) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise DeliveryRejected(411, "chunked bodies are not accepted; send Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise DeliveryRejected(411, "missing Content-Length header")
        if not length_text.strip().isdigit():
            self.close_connection = True
            raise DeliveryRejected(400, f"invalid Content-Length {length_text[:40]!r}")
        length = int(length_text)
        if length > max_bytes:
            # The body is left unread, so the connection cannot be reused.
            self.close_connection = True
            raise DeliveryRejected(
                413, f"body of {length} bytes exceeds the {max_bytes}-byte limit"
            )
        body = self.rfile.read(length)
        if len(body) < length:
            raise DeliveryRejected(400, f"body ended after {len(body)} of {length} bytes")
        return body

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.client_address[0], format % args)
