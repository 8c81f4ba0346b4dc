"""What a teller hears about a request whose hot keys were removed after archiving.

The answer is NOT_FOUND (the live queue no longer holds it) with a message saying it
was archived, when, with what outcome, and how it is read: through
``authq-admin archive show REQUEST_ID --reason TEXT``, since every access to the
permanent record needs a stated reason and is audited (R15). The archive itself is
not served over the teller API. Another branch's teller gets the plain answer."""

from __future__ import annotations

from server.archive.index import ArchiveIndex
from server.errors import NotFound


async def not_found_or_archived(
    index: ArchiveIndex | None, request_id: str, branch_id: str
) -> NotFound:
    marker = await index.marker(request_id) if index is not None else None
    if marker is None or marker.branch_id != branch_id:
        return NotFound(f"no request with request_id {request_id}")
    return NotFound(
        f"request {request_id} ended {marker.state} and is in the permanent archive "
        f"(day {marker.day}); it left the live queue after the keep-hot window. "
        f"An archived record is read with a reason, which is audited (R15): "
        f"authq-admin archive show {request_id} --reason TEXT"
    )
