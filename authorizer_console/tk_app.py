"""authq-console: the authorizer console and, for SUPERVISOR and DIRECTOR accounts,
the supervisor view, in Tk.

The network runs in the Worker's thread; its events land on a queue.Queue that the
Tk thread drains every POLL_MS with ``after``, so the window never waits on gRPC."""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tkinter as tk
from collections.abc import Sequence
from tkinter import ttk

from authq.channel import DEFAULT_TARGET, ClientTLS
from authq.login import add_tls_arguments

from authorizer_console.messages import Command, Connected, Event, LoginFailed
from authorizer_console.tk_item import ItemScreen
from authorizer_console.tk_supervisor import SupervisorScreen
from authorizer_console.worker import Worker

POLL_MS = 40
SUPERVISOR_ROLES = {"SUPERVISOR", "DIRECTOR"}


class ConsoleApp:
    def __init__(
        self,
        root: tk.Tk,
        target: str,
        user: str = "",
        password: str = "",
        tls: ClientTLS | None = None,
    ) -> None:
        self.root = root
        self.target = target
        self.tls = tls
        self.events: queue.Queue[Event] = queue.Queue()
        self.worker: Worker | None = None
        self.screen: ItemScreen | SupervisorScreen | None = None
        root.title("authq console")
        root.geometry("1400x860")
        root.protocol("WM_DELETE_WINDOW", self.close)
        self._login_form(user, password)
        self._polling = root.after(POLL_MS, self._poll)

    # -- login -------------------------------------------------------------------

    def _login_form(self, user: str, password: str) -> None:
        self.login = ttk.Frame(self.root, padding=30)
        self.login.place(relx=0.5, rely=0.4, anchor="center")
        ttk.Label(self.login, text="authq console", font=("TkDefaultFont", 16, "bold")).grid(
            row=0, column=0, columnspan=2, pady=8
        )
        ttk.Label(self.login, text=f"server {self.target}").grid(row=1, column=0, columnspan=2)
        ttk.Label(self.login, text="user").grid(row=2, column=0, sticky="e")
        self.user_entry = ttk.Entry(self.login, width=24)
        self.user_entry.insert(0, user)
        self.user_entry.grid(row=2, column=1)
        ttk.Label(self.login, text="password").grid(row=3, column=0, sticky="e")
        self.password_entry = ttk.Entry(self.login, width=24, show="•")
        self.password_entry.insert(0, password)
        self.password_entry.grid(row=3, column=1)
        self.login_message = ttk.Label(self.login, foreground="#b3261e")
        self.login_message.grid(row=4, column=0, columnspan=2)
        button = ttk.Button(self.login, text="Log in", command=self.log_in)
        button.grid(row=5, column=0, columnspan=2, pady=8)
        for entry in (self.user_entry, self.password_entry):
            entry.bind("<Return>", lambda _: self.log_in())
        (self.password_entry if user else self.user_entry).focus_set()

    def log_in(self) -> None:
        user, password = self.user_entry.get().strip(), self.password_entry.get()
        if not user or not password:
            self.login_message.configure(text="user and password, please")
            return
        self.login_message.configure(text="logging in...", foreground="#1d3557")
        self.worker = Worker(self.target, user, password, self.events.put, tls=self.tls)
        self.worker.start()

    # -- events ------------------------------------------------------------------

    def send(self, command: Command) -> None:
        if self.worker is not None:
            self.worker.send(command)

    def _poll(self) -> None:
        try:
            while True:
                self._dispatch(self.events.get_nowait())
        except queue.Empty:
            pass
        self._polling = self.root.after(POLL_MS, self._poll)

    def _dispatch(self, event: Event) -> None:
        if self.screen is None:
            if isinstance(event, LoginFailed):
                self.login_message.configure(text=event.message, foreground="#b3261e")
                if self.worker is not None:
                    self.worker.stop(0.5)
                    self.worker = None
                return
            if isinstance(event, Connected):
                self._open_screen(event)
            else:
                return
        assert self.screen is not None
        self.screen.handle(event)

    def _open_screen(self, event: Connected) -> None:
        self.login.destroy()
        if SUPERVISOR_ROLES & set(event.roles):
            self.screen = SupervisorScreen(self.root, self.send)
            self.root.title(f"authq supervisor view: {event.user_id}")
        else:
            screen = ItemScreen(self.root, self.send)
            self.root.bind("<Key>", screen.on_key)
            self.screen = screen
            self.root.title(f"authq console: {event.user_id}")
        self.screen.pack(fill="both", expand=True)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop(2.0)
        # A poll still scheduled would fire into the destroyed interpreter and print
        # "invalid command name" on the terminal.
        self.root.after_cancel(self._polling)
        self.root.destroy()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authq-console",
        description="The authorizer console (keyboard first) and, for supervisors and "
        "directors, the live supervisor view.",
    )
    parser.add_argument(
        "--server", default=os.environ.get("AUTHQ_SERVER", DEFAULT_TARGET), help="host:port"
    )
    parser.add_argument("--user", default=os.environ.get("AUTHQ_USER", ""), help="account id")
    parser.add_argument(
        "--password",
        default=os.environ.get("AUTHQ_PASSWORD", ""),
        help="fills the login form (env AUTHQ_PASSWORD)",
    )
    parser.add_argument("--login", action="store_true", help="log in at once with these")
    add_tls_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tls = ClientTLS.from_options(args.tls_ca, args.tls_cert, args.tls_key)
    except ValueError as exc:  # --tls-cert without --tls-key, or the other way round
        print(f"authq-console: {exc}", file=sys.stderr)
        return 2
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(f"authq-console: no display ({exc}); set DISPLAY", file=sys.stderr)
        return 2
    app = ConsoleApp(root, args.server, args.user, args.password, tls)
    if args.login:
        root.after(100, app.log_in)
    try:
        root.mainloop()
    except KeyboardInterrupt:  # Ctrl-C in its terminal, or `make demo` ending
        app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
