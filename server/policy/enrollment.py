"""Branch enrollment in central authorization (R10): a branch takes part only while enrolled;
it can be suspended wholly or for chosen business types, or withdrawn, always with a reason.

SUSPENDED with an empty `suspended_types` suspends the whole branch; with types, only those.
So losing the type list by mistake suspends more, never less."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EnrollmentStatus(StrEnum):
    ENROLLED = "ENROLLED"
    SUSPENDED = "SUSPENDED"
    WITHDRAWN = "WITHDRAWN"


@dataclass(frozen=True, slots=True)
class Enrollment:
    status: EnrollmentStatus
    suspended_types: frozenset[str] = field(default_factory=frozenset)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status is not EnrollmentStatus.SUSPENDED and self.suspended_types:
            raise ValueError(f"only a SUSPENDED branch has suspended types, not {self.status}")
        if self.status is not EnrollmentStatus.ENROLLED and not self.reason.strip():
            raise ValueError(f"a {self.status} branch needs a reason (R10)")

    @property
    def wholly_suspended(self) -> bool:
        return self.status is EnrollmentStatus.SUSPENDED and not self.suspended_types

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "suspended_types": sorted(self.suspended_types),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Enrollment:
        """Raises ValueError for a record that is not a valid enrollment."""
        try:
            status = EnrollmentStatus(data["status"])
            types = data.get("suspended_types", [])
            reason = data.get("reason", "")
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"not an enrollment record: {exc!r}") from None
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise ValueError("suspended_types must be a list of business codes")
        if not isinstance(reason, str):
            raise ValueError("reason must be a string")
        return cls(status, frozenset(types), reason)


ENROLLED = Enrollment(EnrollmentStatus.ENROLLED)


def check_enrollment(enrollment: Enrollment, business_code: str) -> str | None:
    """The sentence refusing this business for the branch, or None when it may go on."""
    status = enrollment.status
    if status is EnrollmentStatus.WITHDRAWN:
        return (
            "This branch has been withdrawn from central authorization "
            f"({enrollment.reason}): authorize on site (R10)."
        )
    if enrollment.wholly_suspended:
        return (
            "Central authorization is suspended for this branch "
            f"({enrollment.reason}): authorize on site (R10)."
        )
    if business_code in enrollment.suspended_types:
        return (
            f"Central authorization of {business_code} is suspended for this branch "
            f"({enrollment.reason}): authorize it on site (R10)."
        )
    return None
