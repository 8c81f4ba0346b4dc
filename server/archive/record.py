"""The archived form of an ended request: canonical JSON (sorted keys, fixed
indentation, UTF-8) so that archiving the same request twice yields the same bytes."""

from __future__ import annotations

import json
from typing import Any

from server.archive.layout import image_name
from server.domain.records import HistoryEntry, Image, RequestRecord

FORMAT = "authq-archive-record-v1"


def _image(image: Image, supplement: bool) -> dict[str, Any]:
    return {
        "kind": image.kind,
        "sha256": image.sha256,
        "size_bytes": image.size_bytes,
        "content_type": image.content_type,
        "file": image_name(image.sha256, image.content_type),
        "supplement": supplement,
    }


def _entry(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "version": entry.version,
        "at_ms": entry.at_ms,
        "event": entry.event,
        "actor": entry.actor,
        "state": entry.state.value,
        "reason_code": entry.reason_code,
        "note": entry.note,
        "kinds": list(entry.kinds),
    }


def record_document(record: RequestRecord) -> dict[str, Any]:
    sub = record.submission
    final = record.history[-1]
    return {
        "format": FORMAT,
        "request_id": sub.request_id,
        "branch_id": sub.branch_id,
        "teller_id": sub.teller_id,
        "business_type": sub.business_type,
        "amount_minor": sub.amount_minor,
        "currency": sub.currency,
        "account": sub.account,
        "customer_name": sub.customer_name,
        "memo": sub.memo,
        "fields": dict(sub.fields),
        "urgency": sub.urgency,
        "importance": sub.importance,
        "preparation_seconds": sub.preparation_seconds,
        "submitted_ms": record.submitted_ms,
        "state": record.state.value,
        "ended_ms": final.at_ms,
        "decision": _entry(final),
        "images": [_image(i, False) for i in sub.images]
        + [_image(i, True) for i in record.supplements],
        "history": [_entry(entry) for entry in record.history],
    }


def canonical_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()
