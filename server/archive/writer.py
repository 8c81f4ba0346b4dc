"""Writes one ended request into the archive: its images, then its record, then the
manifest lines naming them, each file fsynced and its directory too, so that once
write() returns the request is durably archived and may be marked so in Redis.

Files are created under a hidden temporary name and hard-linked into place, which
fails if the name exists: an existing file is kept when its bytes are the same (a
retry, or another process archiving the same request) and is a conflict otherwise;
the archive never rewrites a file."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from server.archive.layout import day_dir, day_of, image_name, record_name
from server.archive.manifest import FileEntry, ManifestConflict, ManifestWriter
from server.archive.record import canonical_bytes, record_document
from server.domain.records import RequestRecord
from server.files import fsync_dir, make_dirs, write_once


class ArchiveDataError(Exception):
    """An image's bytes do not match its hash: nothing of the request is listed."""


@dataclass(frozen=True, slots=True)
class Written:
    day: date
    head: tuple[int, str]


class ArchiveWriter:
    """Blocking file work: call from a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifests = ManifestWriter(root)

    def write(self, record: RequestRecord, images: Mapping[str, bytes]) -> Written:
        result = self.write_many([record], images.__getitem__)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def write_many(
        self, records: Sequence[RequestRecord], read_image: Callable[[str], bytes]
    ) -> list[Written | Exception]:
        """Archives a batch: every file of every request written and fsynced, one
        directory fsync and one manifest append per day for the whole batch (each a
        disk flush that Redis's own fsyncs queue behind). ``read_image`` gives an
        image's bytes by sha256; it is not called for an image the day already holds
        (images are named by their hash, and verify checks their bytes). A request
        whose images cannot be read or do not match their hashes gets its exception
        in the result and none of its files is written; the others go on."""
        by_day: dict[date, list[FileEntry]] = {}
        results: list[tuple[date, list[FileEntry]] | Exception] = []
        for record in records:
            try:
                day, entries = self._files(record, read_image)
            except (OSError, ArchiveDataError, ManifestConflict) as exc:
                results.append(exc)
                continue
            results.append((day, entries))
            by_day.setdefault(day, []).extend(entries)
        heads = {}
        for day, entries in by_day.items():
            fsync_dir(day_dir(self.root, day))
            heads[day] = self.manifests.append(day, entries)
        return [
            result if isinstance(result, Exception) else Written(result[0], heads[result[0]])
            for result in results
        ]

    def _files(
        self, record: RequestRecord, read_image: Callable[[str], bytes]
    ) -> tuple[date, list[FileEntry]]:
        """Writes one request's files (images first, all read and checked before any
        is written) and returns its day and manifest entries."""
        document = record_document(record)
        data = canonical_bytes(document)
        day = day_of(int(document["ended_ms"]))
        directory = day_dir(self.root, day)
        make_dirs(directory)
        images = {image.sha256: image for image in record.images}.values()
        new: dict[str, bytes] = {}
        entries = []
        for image in images:
            path = directory / image_name(image.sha256, image.content_type)
            if path.exists():
                if path.stat().st_size != image.size_bytes:
                    raise ManifestConflict(
                        f"{path} exists with another size: the archive is never rewritten"
                    )
            else:
                blob = read_image(image.sha256)
                if (
                    len(blob) != image.size_bytes
                    or hashlib.sha256(blob).hexdigest() != image.sha256
                ):
                    raise ArchiveDataError(
                        f"request {record.request_id}: the stored bytes of image "
                        f"{image.sha256} do not match its hash"
                    )
                new[path.name] = blob
            entries.append(FileEntry(path.name, image.sha256, image.size_bytes))
        for name, blob in new.items():
            write_once(directory / name, blob, _conflict)
        name = record_name(record.request_id)
        write_once(directory / name, data, _conflict)
        entries.append(FileEntry(name, hashlib.sha256(data).hexdigest(), len(data)))
        return day, entries


def _conflict(path: Path) -> ManifestConflict:
    return ManifestConflict(f"{path} exists with other content: the archive is never rewritten")
