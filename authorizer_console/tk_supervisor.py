"""The supervisor view (Tk): live figures from the pushed snapshots, the waiting list,
pending moves, emergencies, authorizer accounts, and two charts drawn with Pillow.
Checks and wording live in supervisor_state."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable, Sequence
from tkinter import ttk

from PIL import ImageTk

from authorizer_console.charts import bar_chart, wait_chart
from authorizer_console.messages import Command, Event
from authorizer_console.supervisor_state import SupervisorState

LEVEL_COLORS = {"info": "#1d3557", "ok": "#2a7d46", "error": "#b3261e"}
CHART_SIZE = (420, 150)


def table(master: tk.Misc, columns: Sequence[tuple[str, int]], height: int) -> ttk.Treeview:
    tree = ttk.Treeview(master, columns=[c for c, _ in columns], show="headings", height=height)
    for name, width in columns:
        tree.heading(name, text=name)
        tree.column(name, width=width, stretch=name == columns[-1][0])
    return tree


def fill(tree: ttk.Treeview, rows: Sequence[Sequence[str]]) -> None:
    selected = [tree.item(i, "values")[0] for i in tree.selection()]
    tree.delete(*tree.get_children())
    for row in rows:
        iid = tree.insert("", "end", values=list(row))
        if row and row[0] in selected:
            tree.selection_add(iid)


class SupervisorScreen(ttk.Frame):
    def __init__(self, master: tk.Misc, send: Callable[[Command], None]) -> None:
        super().__init__(master, padding=6)
        self.model = SupervisorState()
        self.dispatch = send
        self._charts: list[ImageTk.PhotoImage] = []
        self._build()

    def _build(self) -> None:
        # The side tables keep their natural width; the waiting list takes the rest.
        self.columnconfigure(0, weight=0)
        self.columnconfigure(1, weight=1)
        self.status = ttk.Label(self, anchor="w")
        self.status.grid(row=0, column=0, columnspan=2, sticky="ew")
        self.summary = ttk.Label(self, justify="left", font=("TkDefaultFont", 11))
        self.summary.grid(row=1, column=0, sticky="nw")
        charts = ttk.Frame(self)
        charts.grid(row=1, column=1, sticky="ne")
        self.decisions_chart = tk.Label(charts)
        self.decisions_chart.pack()
        self.wait_chart = tk.Label(charts)
        self.wait_chart.pack()
        side = ttk.Frame(self)
        side.grid(row=2, column=0, sticky="nsew")
        self.classes = table(side, [("class", 175), ("waiting", 70), ("oldest", 90)], 6)
        self.classes.pack(fill="x")
        self.branches = table(side, [("branch", 150), ("waiting", 70)], 4)
        self.branches.pack(fill="x", pady=4)
        self.authorizers = table(side, [("authorizer", 150), ("doing", 200)], 5)
        self.authorizers.pack(fill="x")
        main = ttk.Frame(self)
        main.grid(row=2, column=1, sticky="nsew")
        self.waiting = table(
            main,
            [
                ("#", 40),
                ("request", 290),
                ("business", 100),
                ("amount", 125),
                ("branch", 80),
                ("waited", 70),
                ("class", 50),
            ],
            10,
        )
        self.waiting.pack(fill="both", expand=True)
        self.moves = table(main, [("request", 220), ("requested by", 110), ("reason", 200)], 3)
        self.moves.pack(fill="x", pady=4)
        self.emergencies = table(main, [("id", 60), ("scope", 140), ("reason", 260)], 3)
        self.emergencies.pack(fill="x")
        self._controls(self)
        self.notice = ttk.Label(self, anchor="w", font=("TkDefaultFont", 11, "bold"))
        self.notice.grid(row=4, column=0, columnspan=2, sticky="ew")
        self.rowconfigure(2, weight=1)

    def _controls(self, master: tk.Misc) -> None:
        bar = ttk.Frame(master)
        bar.grid(row=3, column=0, columnspan=2, sticky="ew", pady=4)
        ttk.Label(bar, text="reason / note").grid(row=0, column=0)
        self.reason = ttk.Entry(bar, width=40)
        self.reason.grid(row=0, column=1, sticky="ew")
        ttk.Label(bar, text="branches (empty: center-wide)").grid(row=0, column=2)
        self.branch_ids = ttk.Entry(bar, width=18)
        self.branch_ids.grid(row=0, column=3)
        ttk.Label(bar, text="authorizer").grid(row=0, column=4)
        self.account = ttk.Entry(bar, width=14)
        self.account.grid(row=0, column=5)
        buttons = (
            ("Move up (R6)", self._move),
            ("Confirm move", self._confirm),
            ("Declare emergency", self._declare),
            ("End emergency", self._end),
            ("Disable", lambda: self._enabled(False)),
            ("Enable", lambda: self._enabled(True)),
        )
        for n, (label, action) in enumerate(buttons):
            ttk.Button(bar, text=label, command=action).grid(row=1, column=n, sticky="ew")

    def _selected(self, tree: ttk.Treeview, column: int = 0) -> str:
        selection = tree.selection()
        if not selection:
            return ""
        return str(tree.item(selection[0], "values")[column]).split(" ")[0]

    def _run(self, commands: list[Command]) -> None:
        for command in commands:
            self.dispatch(command)
        self.redraw()

    def _move(self) -> None:
        self._run(self.model.request_move(self._selected(self.waiting, 1), self.reason.get()))

    def _confirm(self) -> None:
        self._run(self.model.confirm_move(self._selected(self.moves)))

    def _declare(self) -> None:
        self._run(self.model.declare_emergency(self.reason.get(), self.branch_ids.get()))

    def _end(self) -> None:
        self._run(self.model.end_emergency(self._selected(self.emergencies), self.reason.get()))

    def _enabled(self, enabled: bool) -> None:
        self._run(self.model.set_enabled(self.account.get(), enabled, self.reason.get()))

    def handle(self, event: Event) -> None:
        self._run(self.model.handle(event))

    def redraw(self) -> None:
        s = self.model
        self.status.configure(text=s.connection)
        self.summary.configure(text="\n".join(s.summary_lines()))
        self.notice.configure(text=s.notice, foreground=LEVEL_COLORS.get(s.notice_level, "#000"))
        fill(self.classes, s.class_rows())
        fill(self.branches, s.branch_rows())
        fill(self.authorizers, s.authorizer_rows())
        fill(self.waiting, s.waiting_rows())
        fill(self.moves, s.move_rows())
        fill(self.emergencies, s.emergency_rows())
        self._charts = [
            ImageTk.PhotoImage(bar_chart(s.decisions_series(), CHART_SIZE,
                                         "decisions per minute")),
            ImageTk.PhotoImage(wait_chart(s.wait_series(), CHART_SIZE,
                                          "queue wait per minute (p50, max)")),
        ]  # fmt: skip
        self.decisions_chart.configure(image=self._charts[0])
        self.wait_chart.configure(image=self._charts[1])
