"""How the command lines end when the person or the pipe stops them, or a local file
fails them: one line, no traceback. Imports nothing heavy: the command lines use it
before grpc is loaded."""

from __future__ import annotations

import importlib
import os
import sys

# What a shell reports for a program stopped by SIGINT or SIGPIPE (128 + the signal).
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class Interrupted(Exception):
    """Ctrl-C, carrying what the person must know about the work it cut short."""


def launch(module: str, prog: str) -> int:
    """Runs ``module``'s main for the console script ``prog``. Loading the command
    line (grpc and protobuf with it) takes a tenth of a second: Ctrl-C in it ends in
    one line too."""
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        return interrupted(prog)
    code: int = main()
    return code


def interrupted(prog: str, note: str = "") -> int:
    """Says so in one line; returns the exit code."""
    print(f"{prog}: interrupted" + (f": {note}" if note else ""), file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def broken_pipe() -> int:
    """The reader of stdout went away (``| head``); returns the exit code. Python
    flushes stdout once more at exit, which would fail again and say so: stdout now
    points at /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def local_reason(exc: OSError) -> str:
    """An OSError in one line: the file it names, and why."""
    if exc.filename is None:
        return exc.strerror or str(exc)
    return f"{exc.filename}: {exc.strerror or exc}"
