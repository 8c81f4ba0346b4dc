"""Notes of the audit chain's head, kept on disk beside the segment files.

The hash chain shows a changed record only to someone who holds a hash from before
the change: whoever can write Redis can rewrite a record and re-chain every record
after it, and ``audit verify`` then finds a consistent trail. The archiver therefore
notes the chain's head (seq and hash) in ``<archive>/audit/witness.txt`` every few
minutes, one line ``<seq> <hash> <noted at, epoch ms>`` appended and fsynced, and
verify checks that the trail still passes through every note. A record chained
before the last note cannot then be rewritten, nor records removed, by someone who
reaches Redis but not the archive's disk (R15). Operators who copy the file off the
machine (or its last line, daily) extend that to someone who reaches both."""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path

from server.files import append_durably, fsync_dir, make_dirs
from server.store.audit_chain import Anchor

WITNESS_NAME = "witness.txt"
_LINE_RE = re.compile(r"^(\d+) ([0-9a-f]{64}) (\d+)\Z")


@dataclass(frozen=True, slots=True)
class WitnessNote:
    anchor: Anchor
    noted_at_ms: int


@dataclass(frozen=True, slots=True)
class WitnessRead:
    notes: list[WitnessNote]
    # Lines that are not notes (a changed file): verify names them.
    problems: list[str]


class AuditWitness:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def beside(cls, segments_dir: Path) -> AuditWitness:
        return cls(segments_dir / WITNESS_NAME)

    def read(self) -> WitnessRead:
        """Every note, in file order. A last line without its newline is an append cut
        short by a crash, not a note."""
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return WitnessRead([], [])
        notes: list[WitnessNote] = []
        problems: list[str] = []
        lines = text.split("\n")[:-1]  # the last piece ends no line
        for number, line in enumerate(lines, start=1):
            found = _LINE_RE.match(line)
            if not found:
                problems.append(f"{self.path.name} line {number}: not a note: {line[:80]!r}")
                continue
            note = WitnessNote(Anchor(int(found[1]), found[2]), int(found[3]))
            if notes and note.anchor.seq <= notes[-1].anchor.seq:
                problems.append(
                    f"{self.path.name} line {number}: seq {note.anchor.seq} after seq "
                    f"{notes[-1].anchor.seq} (the file was changed)"
                )
                continue
            notes.append(note)
        return WitnessRead(notes, problems)

    def note(self, anchor: Anchor, at_ms: int) -> bool:
        """Appends the note, on disk when this returns, if the chain has grown since the
        last one; False if it has not. Several server processes may share the archive:
        their appends take turns under an exclusive flock, and each compares with the
        last note as the file holds it then, so the seqs keep increasing."""
        make_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            end = os.lseek(fd, 0, os.SEEK_END)
            whole, last = _last_line(fd, end)
            noted = _LINE_RE.match(last)
            if noted and anchor.seq <= int(noted[1]):
                return False
            if whole < end:  # an append a crash cut short: never a note, so dropped
                os.ftruncate(fd, whole)
            os.lseek(fd, whole, os.SEEK_SET)
            append_durably(fd, whole, f"{anchor.seq} {anchor.hash} {at_ms}\n".encode())
            # Every time, and under the lock: the file may be new, made here or by another
            # process that has not fsynced it into the directory yet (or died first), and
            # the note stands only once the file's entry is on disk. One note every few
            # minutes makes the cost nothing.
            fsync_dir(self.path.parent)
        finally:
            os.close(fd)  # and with it the lock
        return True


def _last_line(fd: int, end: int) -> tuple[int, str]:
    """Where the file's last whole line ends, and that line (a note is about 90
    bytes, so the last 4 KB hold it): only the end of the file is read."""
    start = max(0, end - 4096)
    tail = os.pread(fd, end - start, start)
    cut = tail.rfind(b"\n")
    if cut < 0:
        # No line end in the tail: an empty file, or a first note cut short (dropped);
        # past the first 4 KB, a changed file, left for verify to name.
        return (0 if start == 0 else end), ""
    whole = start + cut + 1
    line = tail[:cut].rsplit(b"\n", 1)[-1]
    return whole, line.decode("ascii", errors="replace")
