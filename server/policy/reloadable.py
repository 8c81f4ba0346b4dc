"""The policy in force, replaced as a whole on reload (issue 3 §1: reloadable without a
restart; a bad file is refused and the old policy stays in force).

Readers take one `LoadedPolicy` snapshot per request, so a reload between two reads can
never mix two policies in one decision. Swapping a single reference is atomic in Python;
the lock only keeps two concurrent reloads from handing out the same version number."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from server.policy.loader import DEFAULT_POLICY, parse_policy
from server.policy.model import Policy, PolicyError


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: Policy
    version: int  # 1 for the policy loaded at start, +1 per reload that changed it
    sha256: str  # of the file's bytes, for the audit trail
    source: str


class PolicyHolder:
    def __init__(self, loaded: LoadedPolicy) -> None:
        self._loaded = loaded
        self._lock = threading.RLock()

    @classmethod
    def from_file(cls, path: Path = DEFAULT_POLICY) -> PolicyHolder:
        policy, digest = _read(path)
        return cls(LoadedPolicy(policy, 1, digest, str(path)))

    @property
    def loaded(self) -> LoadedPolicy:
        return self._loaded

    @property
    def policy(self) -> Policy:
        return self._loaded.policy

    @property
    def version(self) -> int:
        return self._loaded.version

    @property
    def sha256(self) -> str:
        return self._loaded.sha256

    def reload(self, path: Path | None = None) -> Policy:
        """Loads `path` (default: the file last loaded) and puts it in force if it validates;
        otherwise raises PolicyError and the current policy stays. A file identical to the
        one in force (same sha256) changes nothing, not even the version."""
        with self._lock:
            candidate = self.prepare(path)
            self.put_in_force(candidate)
            return candidate.policy

    def prepare(self, path: Path | None = None) -> LoadedPolicy:
        """What reload() would put in force, not in force yet: the policy in force
        itself when the file is the same; PolicyError if it does not validate. For a
        caller that records the change before making it (Center.reload_policy)."""
        current = self._loaded
        source = Path(current.source) if path is None else path
        policy, digest = _read(source)
        if digest == current.sha256 and str(source) == current.source:
            return current
        return LoadedPolicy(policy, current.version + 1, digest, str(source))

    def put_in_force(self, candidate: LoadedPolicy) -> None:
        """Puts a prepared policy in force. PolicyError if another reload came first:
        its version number would be handed out twice."""
        with self._lock:
            current = self._loaded
            if candidate is current:
                return
            if candidate.version != current.version + 1:
                raise PolicyError(
                    candidate.source, None,
                    f"version {current.version} came into force meanwhile: reload again",
                )  # fmt: skip
            self._loaded = candidate


def _read(path: Path) -> tuple[Policy, str]:
    # Hash and parse the same bytes, so the digest is always the one of the policy in force.
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), None, f"cannot read the policy file: {exc.strerror}") from None
    return parse_policy(data, str(path)), hashlib.sha256(data).hexdigest()
