"""Who is calling.

Until accounts and login tokens arrive (issue "Bank rules"), the caller's id and
branch travel as call metadata set by the client library: ``x-authq-user`` and
``x-authq-branch``. They are read here and nowhere else, so replacing them with a
verified token changes this one module."""

from __future__ import annotations

import re
from typing import Any

import grpc

from server.center import Identity
from server.errors import Unauthenticated

USER_KEY = "x-authq-user"
BRANCH_KEY = "x-authq-branch"
_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def caller(context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
    metadata = {key: value for key, value in context.invocation_metadata() or ()}
    user = metadata.get(USER_KEY, "")
    branch = metadata.get(BRANCH_KEY, "")
    if not isinstance(user, str) or not _ID_RE.match(user):
        raise Unauthenticated(f"missing or malformed {USER_KEY} metadata: who is calling?")
    if branch and (not isinstance(branch, str) or not _ID_RE.match(branch)):
        raise Unauthenticated(f"malformed {BRANCH_KEY} metadata")
    return Identity(user_id=user, branch_id=str(branch))


def teller(context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
    identity = caller(context)
    if not identity.branch_id:
        raise Unauthenticated(f"a teller call needs {BRANCH_KEY} metadata")
    return identity
