"""Verification of MLflow webhook deliveries: HMAC signature, timestamp and delivery id headers.

MLflow 3.3+ (`mlflow/webhooks/delivery.py`, `_generate_hmac_signature`) signs the UTF-8 bytes of
`"{delivery_id}.{timestamp}.{body}"` with HMAC-SHA256 and the webhook's secret, and sends
`v1,<base64 digest>` in `X-MLflow-Signature`. The timestamp is whole Unix seconds in
`X-MLflow-Timestamp` and the delivery id a UUID4 in `X-MLflow-Delivery-Id`. The signature covers
both, so a delivery cannot be replayed with a fresh timestamp.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from mlflow.webhooks.constants import (
    WEBHOOK_DELIVERY_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_SIGNATURE_VERSION,
    WEBHOOK_TIMESTAMP_HEADER,
)

__all__ = [
    "DELIVERY_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryRejected",
    "check_delivery_id",
    "check_timestamp_age",
    "parse_timestamp",
    "signature_matches",
]

SIGNATURE_HEADER = WEBHOOK_SIGNATURE_HEADER
TIMESTAMP_HEADER = WEBHOOK_TIMESTAMP_HEADER
DELIVERY_ID_HEADER = WEBHOOK_DELIVERY_ID_HEADER

# MLflow sends a UUID4; anything printable up to this length is accepted so that another
# sender's id format still works, while a huge or binary header is rejected.
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


class DeliveryRejected(Exception):
    """A delivery the receiver does not accept, with the HTTP status and the reason it returns."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def signature_matches(
    secret: str, delivery_id: str, timestamp: str, body: bytes, header: str
) -> bool:
    """Return whether `header` contains a v1 signature of the delivery made with `secret`.

    The header may list several space-separated signatures, as Standard Webhooks allows during
    a secret rotation; one match is enough. Each comparison takes constant time.
    """
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    expected = base64.b64encode(digest)
    matched = False
    for entry in header.split():
        version, _, value = entry.partition(",")
        # Every entry is compared, so the time taken does not reveal which one matched.
        if version == WEBHOOK_SIGNATURE_VERSION and hmac.compare_digest(
            value.encode("utf-8", "replace"), expected
        ):
            matched = True
    return matched


def parse_timestamp(timestamp: str | None) -> int:
    """Return the timestamp header as Unix seconds; raise DeliveryRejected if missing or malformed."""
    if not timestamp:
        raise DeliveryRejected(400, f"missing {TIMESTAMP_HEADER} header")
    if not _TIMESTAMP.match(timestamp):
        raise DeliveryRejected(400, f"{TIMESTAMP_HEADER} must be whole Unix seconds")
    return int(timestamp)


def check_timestamp_age(timestamp_s: int, max_age_s: int, now: float | None = None) -> None:
    """Raise DeliveryRejected unless `timestamp_s` is within `max_age_s` seconds of now.

    A timestamp as far in the future is rejected as well, so a clock ahead of ours cannot
    extend how long a captured delivery stays valid.
    """
    age_s = (time.time() if now is None else now) - timestamp_s
    if abs(age_s) > max_age_s:
        raise DeliveryRejected(
            401,
            f"stale delivery: {TIMESTAMP_HEADER} is {age_s:.0f} s from now, beyond the "
            f"{max_age_s} s limit",
        )


def check_delivery_id(delivery_id: str | None) -> str:
    """Return the delivery id; raise DeliveryRejected if it is missing or malformed."""
    if not delivery_id:
        raise DeliveryRejected(400, f"missing {DELIVERY_ID_HEADER} header")
    if not _DELIVERY_ID.match(delivery_id):
        raise DeliveryRejected(
            400, f"{DELIVERY_ID_HEADER} must be 1-128 letters, digits or '._:-'"
        )
    return delivery_id
