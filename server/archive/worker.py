"""The archiver in a process of its own, at a lower CPU priority.

Archiving is work nobody waits for, yet per request it costs about as much CPU as
the request's trip through the queue (its record read back, a file created and
fsynced, three scripts). Run on the server's event loop it stalled the loop for
milliseconds at a time (bench: half-load p99 submit acknowledgement 22 ms with it,
8 ms without). In a child process at a higher niceness the kernel runs the server
first, and the archive catches up in the time the server leaves; under a sustained
peak it falls behind and catches up afterwards (hot keys stay for days).

On Linux the child also takes the SCHED_IDLE policy: it runs only on CPU time nothing
else wants. Niceness alone still let it take about 0.4 ms of CPU per request during a
peak, most of it in the kernel creating files (on the bench VM's ext4 without a
journal, 0.3-0.7 ms per new file in a directory near many recently deleted ones, such
as /tmp after the test suite; 22 us elsewhere), preempting the server's event loop;
idle it leaves the loop alone (bench, 450 cycles/s: p50 submit ack 8.7 -> 5.3 ms;
full cycle 880-960 -> 1,020-1,040/s together with hiredis command packing). The
backlog this defers is reported by the bench and the metrics, and is archived as soon
as the peak passes.

``ArchiverProcess`` is the server's side: it starts ``python -m server.archive.worker``
with its settings, restarts it if it dies, and stops it with the server. The child
follows the event stream like any server process and runs the same Archiver."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import uvloop

from server.archive.archiver import Archiver, ArchiverConfig
from server.archive.audit_mover import AuditMover
from server.archive.blob_gc import BlobCollector
from server.archive.index import ArchiveIndex
from server.archive.writer import ArchiveWriter
from server.blobs import BlobStore, LocalBlobStore
from server.events import EventHub
from server.store.audit import AuditLog
from server.store.audit_segments import AuditSegments
from server.store.connect import event_client, redis_client
from server.store.keys import Keys
from server.store.queue_store import QueueConfig, QueueStore
from server.subprocesses import terminate

log = logging.getLogger(__name__)

NICENESS = 10
# A child that dies is started again after this long (doubling to a minute).
RESTART_BACKOFF_S = 1.0
POOL_SIZE = 8
ORPHAN_CHECK_S = 1.0
# The archiver reads the event stream at most this often (it paces its rounds anyway).
EVENTS_LINGER_S = 0.2


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    """What the archiver needs of the server's settings (passed to the child as JSON)."""

    redis_url: str
    key_prefix: str
    archive_dir: str
    blob_dir: str
    archiver: ArchiverConfig
    gc_grace_s: float
    log_level: str = "INFO"
    # The server process; the archiver stops when it is gone. 0: the parent at start.
    parent_pid: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ArchiveSettings:
        fields = json.loads(text)
        return cls(**{**fields, "archiver": ArchiverConfig(**fields["archiver"])})


def build_archiver(
    store: QueueStore,
    blobs: BlobStore,
    index: ArchiveIndex,
    audit: AuditLog,
    settings: ArchiveSettings,
) -> Archiver:
    """``audit`` has the archive's segment files (AuditSegments.in_archive) to move
    its older records to."""
    return Archiver(
        store,
        blobs,
        index,
        ArchiveWriter(Path(settings.archive_dir)),
        BlobCollector(store.client, store.keys, blobs, index, settings.gc_grace_s),
        settings.archiver,
        AuditMover(audit),
    )


class ArchiverProcess:
    def __init__(self, settings: ArchiveSettings) -> None:
        self.settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="archiver-process")

    async def _spawn(self) -> None:
        self.starts += 1
        settings = replace(self.settings, parent_pid=os.getpid()).to_json()
        # An asyncio child: waiting for it takes no thread of the default executor.
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.archive.worker", settings,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def _supervise(self) -> None:
        backoff = RESTART_BACKOFF_S
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            log.error("the archiver process exited with %s: starting it again in %.0fs",
                      code, backoff)  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)
            if not self._stopping:
                await self._spawn()

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping = True
        if self._proc is not None:
            await terminate(self._proc, "the archiver process", timeout_s)
        if self._supervisor is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._supervisor, 5.0)


async def run(settings: ArchiveSettings) -> None:
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    if hasattr(os, "SCHED_IDLE"):  # Linux
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    client = redis_client(settings.redis_url, POOL_SIZE)
    keys = Keys(settings.key_prefix)
    archiver = build_archiver(
        QueueStore(client, keys, QueueConfig()),
        LocalBlobStore(Path(settings.blob_dir)),
        ArchiveIndex(client, keys),
        AuditLog(
            client,
            prefix=settings.key_prefix,
            segments=AuditSegments.in_archive(Path(settings.archive_dir)),
        ),
        settings,
    )
    hub = EventHub(
        event_client(settings.redis_url),
        keys.events,
        linger_s=EVENTS_LINGER_S,
    )
    hub.add_listener(archiver.on_event)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # A Ctrl-C at the terminal reaches the whole process group: the server stops this
    # process itself (SIGTERM) once it has stopped taking work, or it stops when
    # orphaned. Ending on SIGINT would only look like a crash to the supervisor.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    await hub.start()
    archiver.start()  # its first round sweeps for what ended before the hub followed
    orphan_watch = asyncio.create_task(
        _stop_when_orphaned(stop, settings.parent_pid or os.getppid())
    )
    try:
        await stop.wait()
    finally:
        orphan_watch.cancel()
        await archiver.stop()
        await hub.stop()
        await client.aclose(close_connection_pool=True)


async def _stop_when_orphaned(stop: asyncio.Event, parent: int) -> None:
    """A server killed outright (SIGKILL) cannot stop its archiver: it stops itself."""
    while os.getppid() == parent:  # noqa: ASYNC110 (no event says a parent is gone)
        await asyncio.sleep(ORPHAN_CHECK_S)
    log.warning("the server process is gone: the archiver stops")
    stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m server.archive.worker",
        description="The archiver of one authq server process (started by the server).",
    )
    parser.add_argument("settings", help="ArchiveSettings as JSON")
    args = parser.parse_args()
    settings = ArchiveSettings.from_json(args.settings)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s archiver %(name)s: %(message)s",
    )
    uvloop.run(run(settings))


if __name__ == "__main__":
    main()
