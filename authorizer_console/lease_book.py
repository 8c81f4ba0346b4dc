"""The authorizer command line's lease book: a JSON file in the state dir with the
fencing token, and the images' sha256, of each item taken with `next` and not decided
yet. Replaced whole on each change (authq.local_files), and locked while it is read,
changed and written back: two commands of one desk (`next` in two terminals, `next`
while `approve` runs) would otherwise each write back what they read and lose the
other's change."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from authq.local_files import locked, replace_file

# The command whose book this is: its messages, and this module's, begin so.
PROG = "authq-authorizer"
# Fencing tokens start at 1: a call with none changes nothing, and the center's
# refusal of it says what became of the item.
NO_TOKEN = 0


class UsageError(Exception):
    """A command line that cannot be carried out as typed: one line, exit 2."""


class DamagedBook(Exception):
    """The lease book holds something that is not a lease book: torn by a crash or a
    full disk while a version that wrote it in place was writing, or edited by hand."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"the lease book {path} is damaged ({why})")


class LeaseBook:
    """Remembers the fencing token of each item this authorizer took with `next`,
    so `approve ID` needs no token on the command line, and the sha256 of its
    images, so `image ID PREFIX` can find one from the first digits `next` showed
    (the authorizer has no call that lists a request's images)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, Any]]:
        """The items recorded (none before the first `next`). OSError when the book
        cannot be read, DamagedBook when what it holds is not a lease book."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        if not raw:
            return {}  # created by _locked, and not written yet
        try:
            data = json.loads(raw)
        except ValueError:
            raise DamagedBook(self.path, "not JSON") from None
        try:
            # A book written before images were kept holds bare tokens.
            return {
                str(k): {"token": int(v["token"]), "images": [str(s) for s in v.get("images", [])]}
                if isinstance(v, dict)
                else {"token": int(v), "images": []}
                for k, v in data.items()
            }
        except (AttributeError, KeyError, TypeError, ValueError):
            raise DamagedBook(self.path, "not a lease book") from None

    def _held(self, request_id: str, instead: str) -> dict[str, Any] | None:
        """What was recorded of ``request_id``; a damaged book is a UsageError that
        says what to give ``instead``."""
        try:
            return self._load().get(request_id)
        except DamagedBook as exc:
            raise UsageError(f"{exc}: {instead}") from None

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        """Writes the book whole or not at all (a new file, fsynced, renamed over the
        old): a crash or a full disk mid-write leaves the book as it was, never a
        torn one that loses the tokens of items still held. A failure names the book."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(self.path, json.dumps(data).encode(), self._mode())
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def _mode(self) -> int:
        """The permissions the book has; a new one is its owner's alone, as the saved
        login beside it: it names the customers' requests on this desk."""
        try:
            return stat.S_IMODE(self.path.stat().st_mode)
        except FileNotFoundError:
            return 0o600

    @contextlib.contextmanager
    def _locked(self, create: bool = True) -> Iterator[None]:
        """The book locked for a read-modify-write (readers need no lock: _save replaces
        it whole). The lock is on the book's file itself, as the teller's journal locks
        its own: _save renames a new file over it, so a command that waited on the old
        file lets it go and locks the new one. A book not there yet is created empty
        to be locked when ``create``, else FileNotFoundError. A failure names the book."""
        # Read-only: a book whose mode forbids writing is replaced all the same.
        flags = os.O_RDONLY | (os.O_CREAT if create else 0)
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        with locked(self.path, flags):
            yield

    def put(self, request_id: str, token: int, images: list[str]) -> None:
        with self._locked():
            try:
                data = self._load()
            except DamagedBook as exc:
                # The tokens it held are lost already; the one just taken must not be.
                print(
                    f"{PROG}: {exc}: a new one is started; pass --token for items taken before",
                    file=sys.stderr,
                )
                data = {}
            data[request_id] = {"token": token, "images": images}
            self._save(data)

    def token(self, request_id: str, given: int | None) -> int:
        """The token given, else the one `next` recorded, else NO_TOKEN."""
        if given is not None:
            return given
        held = self._held(request_id, "pass --token as `next` showed it")
        return NO_TOKEN if held is None else int(held["token"])

    async def images(self, request_id: str) -> list[str]:
        held = self._held(request_id, "give the whole sha256")
        if held is None:
            raise UsageError(
                f"no item {request_id} recorded in {self.path}: take it with `next`, "
                "or give the whole sha256"
            )
        return [str(sha) for sha in held.get("images", [])]

    def drop(self, request_id: str) -> None:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._locked(create=False))
                data = self._load()
            except (OSError, DamagedBook):
                return  # no book, or one that cannot be read: nothing to take out
            if data.pop(request_id, None) is not None:
                self._save(data)
