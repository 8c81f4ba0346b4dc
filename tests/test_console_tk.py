"""The Tk layer under Xvfb: log in, an item arrives with its images and is drawn (a
screenshot of the X display checks the image area), keys drive it; the supervisor
view shows the pushed queue. Skipped, saying why, when Xvfb is not installed."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator

import pytest

from authorizer_console.tk_app import ConsoleApp
from authorizer_console.xvfb import grab, xvfb, xvfb_available
from server.accounts.model import Role
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import request

pytestmark = [
    pytest.mark.skipif(
        not xvfb_available(), reason="Xvfb is not on PATH: install xvfb to test the Tk console"
    ),
]


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    # One display for the module: Tk does not survive its X server going away and a
    # later Tk opening another in the same process.
    with xvfb() as name:
        yield name


@pytest.fixture(autouse=True)
def tk_freed_on_this_thread() -> Iterator[None]:
    """Frees each test's Tk objects here, on the main thread. Left to the cyclic GC,
    a Tk interpreter may be freed on whatever thread happens to trigger a collection
    (a thread-pool worker writing a blob, say), and Tcl then aborts the whole process
    ("Fatal Python error: Aborted" while garbage-collecting: twice in a dozen runs)."""
    yield
    gc.collect()


async def pump(root: object, until: Callable[[], bool], within_s: float = 15) -> None:
    """Runs Tk's event loop by hand while the server (this loop) answers."""
    deadline = time.monotonic() + within_s
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError("the window did not get there in time")
        root.update()  # type: ignore[attr-defined]
        await asyncio.sleep(0.02)


async def test_console_draws_an_item_with_its_images(server: RunningServer, display: str) -> None:
    import tkinter as tk

    from authorizer_console.console_state import Phase
    from authorizer_console.tk_item import ItemScreen

    await server.account("authorizer-1", [Role.AUTHORIZER])
    async with server.teller() as teller:
        await teller.submit(request(request_id="tk-00000001"))
    root = tk.Tk()
    try:
        app = ConsoleApp(root, server.target, "authorizer-1", PASSWORD)
        app.log_in()
        await pump(root, lambda: isinstance(app.screen, ItemScreen))
        screen = app.screen
        assert isinstance(screen, ItemScreen)
        await pump(root, lambda: screen.model.view is not None and len(screen.model.images) == 3)
        for _ in range(10):
            root.update()
            await asyncio.sleep(0.02)
        assert "现金取款" in screen.details.get("1.0", "end")
        assert "6222********1234" in screen.details.get("1.0", "end")
        # The large view and the thumbnail strip show pictures, not the background.
        x, y = screen.view.winfo_rootx(), screen.view.winfo_rooty()
        w, h = screen.view.winfo_width(), screen.view.winfo_height()
        shot = grab(display, (x, y, x + w, y + h))
        colors = shot.getcolors(maxcolors=1 << 22) or []
        background = sum(n for n, c in colors if c == (40, 42, 48) or c == (40, 41, 47))
        assert len(colors) > 500, "the image view shows no picture"
        assert background < 0.7 * w * h
        sx, sy = screen.strip.winfo_rootx(), screen.strip.winfo_rooty()
        strip = grab(display, (sx, sy, sx + 3 * 128, sy + 100))
        assert len(strip.getcolors(maxcolors=1 << 22) or []) > 300
        # Keys: zoom in, then approve with a confirming Enter.
        root.event_generate("<Key>", keysym="plus", when="tail")
        await pump(root, lambda: screen.model.view is not None and screen.model.view.state.zoom > 1)
        screen.on_key(_key("a"))  # type: ignore[arg-type]
        screen.on_key(_key("Return"))  # type: ignore[arg-type]
        await pump(root, lambda: screen.model.decided == 1)
        assert "APPROVED" in screen.notice.cget("text")
        assert screen.model.phase is Phase.WAITING
    finally:
        await close(app)


async def close(app: ConsoleApp) -> None:
    app.close()
    # Let the server see the console's streams end and wind their handlers down
    # (a session's token guard checks Redis every second) before the fixture stops it.
    await asyncio.sleep(1.5)


class _key:
    """The parts of a Tk key event the screen reads."""

    def __init__(self, keysym: str) -> None:
        self.keysym = keysym
        self.state = 0
        self.char = keysym if len(keysym) == 1 else ""


async def test_supervisor_view_shows_the_pushed_queue(server: RunningServer, display: str) -> None:
    import tkinter as tk

    from authorizer_console.tk_supervisor import SupervisorScreen

    await server.account("supervisor-1", [Role.SUPERVISOR])
    root = tk.Tk()
    try:
        app = ConsoleApp(root, server.target, "supervisor-1", PASSWORD)
        app.log_in()
        await pump(root, lambda: isinstance(app.screen, SupervisorScreen))
        screen = app.screen
        assert isinstance(screen, SupervisorScreen)
        await pump(root, lambda: screen.model.snapshot is not None)
        async with server.teller() as teller:
            await teller.submit(request(request_id="tk-00000002"))
        await pump(root, lambda: len(screen.waiting.get_children()) == 1)
        row = screen.waiting.item(screen.waiting.get_children()[0], "values")
        assert row[1] == "tk-00000002"
        assert "waiting 1" in screen.summary.cget("text")
    finally:
        await close(app)


async def test_a_wrong_password_stays_on_the_login_form(
    server: RunningServer, display: str
) -> None:
    import tkinter as tk

    root = tk.Tk()
    try:
        app = ConsoleApp(root, server.target, "authorizer-1", "wrong-password-1")
        app.log_in()
        await pump(root, lambda: "logging in" not in app.login_message.cget("text"))
        assert app.screen is None
        assert app.login_message.cget("text")
    finally:
        await close(app)
