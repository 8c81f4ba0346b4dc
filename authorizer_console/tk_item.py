"""The authorizer's item screen (Tk): transaction panel, thumbnail strip, large image
view, forms for reject and ask, a status bar. It only draws ConsoleState and turns
keys into its calls; every decision about what happens lives in console_state."""

from __future__ import annotations

import time
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable
from tkinter import ttk

from PIL import ImageTk

from authorizer_console.catalog import IMAGE_KINDS, KIND_LABELS, REASONS
from authorizer_console.console_state import KEYS, ConsoleState, Form, Phase
from authorizer_console.messages import Command, Event

LEVEL_COLORS = {"info": "#1d3557", "ok": "#2a7d46", "error": "#b3261e"}


def _fit(text: str, pixels: int) -> str:
    """The text, cut with an ellipsis so it stays under its thumbnail."""
    font = tkfont.nametofont("TkDefaultFont")
    if font.measure(text) <= pixels:
        return text
    while text and font.measure(text + "…") > pixels:
        text = text[:-1]
    return text.rstrip() + "…"


class ItemScreen(ttk.Frame):
    def __init__(self, master: tk.Misc, send: Callable[[Command], None]) -> None:
        super().__init__(master, padding=6)
        self.model = ConsoleState()
        self.dispatch = send
        self._photos: list[ImageTk.PhotoImage] = []
        self._big: ImageTk.PhotoImage | None = None
        self._drawn_form = Form.NONE
        self._build()

    # -- layout ------------------------------------------------------------------

    def _build(self) -> None:
        self.columnconfigure(1, weight=1)
        self.rowconfigure(1, weight=1)
        self.status = ttk.Label(self, anchor="w")
        self.status.grid(row=0, column=0, columnspan=2, sticky="ew")
        left = ttk.Frame(self, width=380)
        left.grid(row=1, column=0, sticky="nsew", padx=(0, 6))
        self.details = tk.Text(left, width=52, height=24, wrap="word", relief="flat",
                               font=("TkDefaultFont", 11))  # fmt: skip
        self.details.pack(fill="both", expand=True)
        self.details.tag_configure("label", foreground="#555")
        self.details.tag_configure("title", font=("TkDefaultFont", 14, "bold"))
        self.form_frame = ttk.Frame(left)
        self.form_frame.pack(fill="x", pady=4)
        self.log = tk.Listbox(left, height=6)
        self.log.pack(fill="x")
        right = ttk.Frame(self)
        right.grid(row=1, column=1, sticky="nsew")
        right.rowconfigure(1, weight=1)
        right.columnconfigure(0, weight=1)
        self.strip = tk.Canvas(right, height=104, background="#28292f", highlightthickness=0)
        self.strip.grid(row=0, column=0, sticky="ew")
        self.strip.bind("<Button-1>", self._strip_click)
        self.view = tk.Canvas(right, background="#282a30", highlightthickness=0)
        self.view.grid(row=1, column=0, sticky="nsew")
        self.view.bind("<Configure>", self._on_resize)
        self.view.bind("<ButtonPress-1>", self._drag_start)
        self.view.bind("<B1-Motion>", self._drag)
        self.caption = ttk.Label(right, anchor="w")
        self.caption.grid(row=2, column=0, sticky="ew")
        self.notice = ttk.Label(self, anchor="w", font=("TkDefaultFont", 11, "bold"))
        self.notice.grid(row=2, column=0, columnspan=2, sticky="ew")
        # The first words of each action only: the whole sentences overflow 1280 px.
        keys = "   ".join(
            f"{k}: {v.split(' (')[0].split(':')[0]}" for k, v in list(KEYS.items())[:5]
        )
        ttk.Label(self, text=keys + "   ←/→ images  +/- zoom  f fit  , . rotate",
                  foreground="#555").grid(row=3, column=0, columnspan=2, sticky="w")  # fmt: skip
        self._drag_from = (0, 0)

    # -- input -------------------------------------------------------------------

    def on_key(self, event: tk.Event[tk.Misc]) -> None:
        if self.model.form in (Form.REJECT, Form.ASK) and event.keysym != "Escape":
            return  # typing into the form
        name = event.keysym
        if int(event.state) & 0x1 and name in ("Left", "Right"):
            name = "Shift-" + name
        self._run(self.model.key(name))

    def handle(self, event: Event) -> None:
        self._run(self.model.handle(event))

    def _run(self, commands: list[Command]) -> None:
        for command in commands:
            self.dispatch(command)
        self.redraw()

    def _strip_click(self, event: tk.Event[tk.Misc]) -> None:
        self.model.select_image(int(event.x) // 128)
        self.redraw()

    def _on_resize(self, event: tk.Event[tk.Misc]) -> None:
        self.model.resize((max(50, int(event.width)), max(50, int(event.height))))
        self.redraw()

    def _drag_start(self, event: tk.Event[tk.Misc]) -> None:
        self._drag_from = (int(event.x), int(event.y))

    def _drag(self, event: tk.Event[tk.Misc]) -> None:
        if self.model.view is not None:
            x0, y0 = self._drag_from
            self.model.view.pan(x0 - int(event.x), y0 - int(event.y))
            self._drag_from = (int(event.x), int(event.y))
            self._draw_image()

    # -- drawing -----------------------------------------------------------------

    def redraw(self) -> None:
        s = self.model
        self.status.configure(text=s.status_line())
        self.notice.configure(text=s.notice.text, foreground=LEVEL_COLORS[s.notice.level])
        self._draw_details()
        self._draw_strip()
        self._draw_image()
        self.caption.configure(text=s.image_caption())
        if s.form is not self._drawn_form:
            self._draw_form()
        self.log.delete(0, "end")
        for line in s.log:
            self.log.insert("end", line)

    def _draw_details(self) -> None:
        text = self.details
        text.configure(state="normal")
        text.delete("1.0", "end")
        item = self.model.item
        if item is None:
            waiting = {
                Phase.WAITING: "Waiting for the next item: it arrives by itself.",
                Phase.AWAY: "Away: no new items. Press w to come back.",
                Phase.CONNECTING: "Not connected: reconnecting by itself...",
                Phase.LOGIN_FAILED: "Login refused.",
            }
            text.insert("end", waiting.get(self.model.phase, ""), "title")
        else:
            text.insert("end", item.title + "\n", "title")
            for label, value in item.detail_lines(time.time_ns() // 1_000_000):
                text.insert("end", f"{label:<15}", "label")
                text.insert("end", f"{value}\n")
        text.configure(state="disabled")

    def _draw_strip(self) -> None:
        self.strip.delete("all")
        self._photos.clear()
        item = self.model.item
        if item is None:
            return
        for slot in item.images:
            x = slot.index * 128 + 4
            loaded = self.model.images.get(slot.index)
            if slot.index == self.model.current:
                self.strip.create_rectangle(x - 3, 2, x + 123, 100, outline="#f4a261", width=3)
            if loaded is not None:
                photo = ImageTk.PhotoImage(loaded.thumb)
                self._photos.append(photo)
                self.strip.create_image(x, 5, image=photo, anchor="nw")
            label = _fit(slot.label, 118)
            self.strip.create_text(x + 60, 98, text=label, fill="white", anchor="s")

    def _draw_image(self) -> None:
        self.view.delete("all")
        view = self.model.view
        if view is None:
            if self.model.item is not None:
                self.view.create_text(20, 20, text="loading image...", fill="white", anchor="nw")
            return
        self._big = ImageTk.PhotoImage(view.render())
        self.view.create_image(0, 0, image=self._big, anchor="nw")

    def _draw_form(self) -> None:
        for child in self.form_frame.winfo_children():
            child.destroy()
        self._drawn_form = self.model.form
        if self.model.form is Form.REJECT:
            self._reject_form()
        elif self.model.form is Form.ASK:
            self._ask_form()
        elif self.model.form is Form.CONFIRM_APPROVE:
            ttk.Label(self.form_frame, text="Approve? Enter confirms, Esc goes back",
                      foreground="#2a7d46").pack(anchor="w")  # fmt: skip
        else:
            self.focus_set()

    def _reject_form(self) -> None:
        frame = self.form_frame
        ttk.Label(frame, text="Reject: reason (↑/↓ or 1-0), note, Enter").pack(anchor="w")
        reasons = tk.Listbox(frame, height=6, exportselection=False)
        for n, (code, text) in enumerate(REASONS, start=1):
            reasons.insert("end", f"{n % 10} {code}: {text}")
        reasons.pack(fill="x")
        note = ttk.Entry(frame)
        note.pack(fill="x")

        def pick(event: tk.Event[tk.Misc]) -> None:
            if event.char.isdigit():
                index = (int(event.char) - 1) % 10
                reasons.selection_clear(0, "end")
                reasons.selection_set(index)
                reasons.see(index)

        def submit(_: tk.Event[tk.Misc]) -> None:
            chosen = reasons.curselection()  # type: ignore[no-untyped-call]
            code = REASONS[chosen[0]][0] if chosen else ""
            self._run(self.model.submit_reject(code, note.get()))

        def cancel(_: tk.Event[tk.Misc]) -> None:
            self._run(self.model.key("Escape"))

        reasons.bind("<Key>", pick)
        for widget in (reasons, note):
            widget.bind("<Return>", submit)
            widget.bind("<Escape>", cancel)
        reasons.focus_set()

    def _ask_form(self) -> None:
        frame = self.form_frame
        ttk.Label(frame, text="Ask for images: kinds (1-6 toggle), note, Enter").pack(anchor="w")
        chosen = {kind: tk.BooleanVar(value=False) for kind in IMAGE_KINDS}
        boxes = ttk.Frame(frame)
        boxes.pack(fill="x")
        for n, kind in enumerate(IMAGE_KINDS, start=1):
            ttk.Checkbutton(boxes, text=f"{n} {KIND_LABELS[kind]}",
                            variable=chosen[kind]).grid(row=(n - 1) // 2, column=(n - 1) % 2,
                                                        sticky="w")  # fmt: skip
        note = ttk.Entry(frame)
        note.pack(fill="x")

        def toggle(event: tk.Event[tk.Misc]) -> str | None:
            if event.char.isdigit() and 1 <= int(event.char) <= len(IMAGE_KINDS):
                var = chosen[IMAGE_KINDS[int(event.char) - 1]]
                var.set(not var.get())
                return "break"
            return None

        def submit(_: tk.Event[tk.Misc]) -> None:
            kinds = [kind for kind, var in chosen.items() if var.get()]
            self._run(self.model.submit_ask(kinds, note.get()))

        note.bind("<Key>", lambda e: toggle(e) if int(e.state) & 0x4 else None)  # Ctrl-digit
        boxes.bind("<Key>", toggle)
        for widget in (boxes, note):
            widget.bind("<Return>", submit)
            widget.bind("<Escape>", lambda _: self._run(self.model.key("Escape")))
        boxes.focus_set()
