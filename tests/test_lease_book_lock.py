"""The authorizer's lease book when two commands of one desk change it at once (`next`
in two terminals, `next` while `approve` runs): each reads the book, changes it and
writes it whole, so neither change may be lost. Each command here is a process of its
own; the first one's write is held until the second is done (on a locked book the
second cannot be done before: the write then goes on after WAIT_S)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any
from unittest import mock

from authq.local_files import replace_file

from authorizer_console import lease_book
from authorizer_console.lease_book import NO_TOKEN, LeaseBook

# How long the first command's write waits for the second command to be done.
WAIT_S = 3.0
SPAWN = multiprocessing.get_context("spawn")


def put_held(path: Path, request_id: str, writing: Event, other_done: Event) -> None:
    """`next` recording ``request_id``: its write waits, with what it read, until the
    other command is done."""

    def held(book: Path, data: bytes, mode: int = 0o600) -> None:
        writing.set()
        other_done.wait(WAIT_S)
        replace_file(book, data, mode)

    with mock.patch.object(lease_book, "replace_file", held):
        LeaseBook(path).put(request_id, 1, [])


def put_meanwhile(path: Path, request_id: str, writing: Event, done: Event) -> None:
    """`next` in another terminal, while the first one writes."""
    writing.wait(60)
    LeaseBook(path).put(request_id, 2, [])
    done.set()


def drop_meanwhile(path: Path, request_id: str, writing: Event, done: Event) -> None:
    """`approve` of ``request_id`` (decided: out of the book), while `next` writes."""
    writing.wait(60)
    LeaseBook(path).drop(request_id)
    done.set()


def run_at_once(path: Path, taken: str, meanwhile: Any, other_id: str) -> None:
    """`next` taking ``taken`` and ``meanwhile(path, other_id)`` in two processes."""
    writing, other_done = SPAWN.Event(), SPAWN.Event()
    processes = [
        SPAWN.Process(target=meanwhile, args=(path, other_id, writing, other_done)),
        SPAWN.Process(target=put_held, args=(path, taken, writing, other_done)),
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0, 0]


def test_two_items_taken_at_once_are_both_recorded(tmp_path: Path) -> None:
    path = tmp_path / "state" / "leases-authorizer-1.json"
    run_at_once(path, "first-0001", put_meanwhile, "second-0002")
    book = LeaseBook(path)
    assert book.token("first-0001", None) == 1
    assert book.token("second-0002", None) == 2


def test_an_item_decided_while_another_is_taken_leaves_the_book(tmp_path: Path) -> None:
    path = tmp_path / "state" / "leases-authorizer-1.json"
    LeaseBook(path).put("decided-0001", 5, [])
    run_at_once(path, "taken-0002", drop_meanwhile, "decided-0001")
    book = LeaseBook(path)
    assert book.token("taken-0002", None) == 1
    assert book.token("decided-0001", None) == NO_TOKEN
