"""Who may look at a request's images (R13, R14): the authorizer holding the item, a
supervisor or director, or a teller or on-site reviewer of the submitting branch.
Nobody else, whatever else they may do."""

from __future__ import annotations

import time
from collections.abc import Collection

from server.accounts.model import Role
from server.domain.records import RequestRecord
from server.domain.states import State
from server.errors import PermissionDenied

_CENTER_MANAGERS = frozenset({Role.SUPERVISOR, Role.DIRECTOR})
_BRANCH_STAFF = frozenset({Role.TELLER, Role.ONSITE_REVIEWER})


def check_image_access(
    user_id: str,
    roles: Collection[Role],
    branch_id: str,
    record: RequestRecord,
    original: bool = False,
    now_ms: int | None = None,
) -> None:
    """Returns if any of the caller's roles grants the look; else PermissionDenied
    naming the rule that refused it. The ``original`` capture (with whatever device
    and location metadata the camera wrote) goes only to supervisors and the
    submitting branch, who captured it: an authorizer judges the watermarked preview.
    A lease that has run out holds nothing, though the reaper may not have put the
    item back yet: its Decide is refused by then too."""
    if _CENTER_MANAGERS & set(roles):
        return
    if _BRANCH_STAFF & set(roles) and branch_id and branch_id == record.submission.branch_id:
        return
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    claimed = record.state is State.CLAIMED and record.holder == user_id
    if Role.AUTHORIZER in roles and claimed and record.lease_until_ms <= now_ms:
        raise PermissionDenied(
            f"the lease of {user_id} on request {record.request_id} has run out: an "
            "authorizer sees only the images of the items it holds (R13, R14)"
        )
    if Role.AUTHORIZER in roles and claimed:
        if original:
            raise PermissionDenied(
                "an authorizer sees the watermarked PREVIEW or THUMBNAIL, not the original "
                "capture (R14)"
            )
        return
    request_id = record.request_id
    if Role.AUTHORIZER in roles:
        raise PermissionDenied(
            f"request {request_id} is not held by {user_id}: an authorizer sees only the "
            "images of the items it holds (R13, R14)"
        )
    if _BRANCH_STAFF & set(roles):
        raise PermissionDenied(
            f"request {request_id} belongs to another branch: branch staff see only the "
            "images of their own branch's requests (R13, R14)"
        )
    raise PermissionDenied(
        f"the images of request {request_id} are shown only to its holder, a supervisor "
        "or the submitting branch (R13, R14)"
    )
