"""Runs a command that gets SIGTERM when the process that started it dies (Linux), as
the demo launcher starts its children: a launcher killed with SIGKILL must not leave a
server and its Redis running.

    AUTHQ_DEMO_PARENT=<launcher pid> python -m authorizer_console.die_with_parent CMD [ARG...]

It asks the kernel for the signal (PR_SET_PDEATHSIG, which exec keeps), then makes
sure the launcher did not die before it asked, and becomes CMD. The launcher could
ask in the child between fork and exec (a preexec_fn), but Python run there aborts in
gRPC's poller when the launcher has a channel open (grpc/grpc#43055)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

# The launcher's pid; unset, CMD simply runs.
PARENT_ENV = "AUTHQ_DEMO_PARENT"
PR_SET_PDEATHSIG = 1
MODULE = "authorizer_console.die_with_parent"


def main(argv: list[str]) -> int:
    if not argv:
        print(f"usage: {PARENT_ENV}=PID python -m {MODULE} CMD [ARG...]", file=sys.stderr)
        return 2
    # Not passed on: CMD's own children are not the launcher's to watch.
    parent = os.environ.pop(PARENT_ENV, "")
    if parent:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != int(parent):
            print(f"the launcher (pid {parent}) is gone: {argv[0]} not started", file=sys.stderr)
            return 1
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
