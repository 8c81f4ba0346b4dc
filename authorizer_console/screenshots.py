"""The README's screenshots, made from the real program:
``python -m authorizer_console.screenshots OUTDIR``.

Starts authq-server (--demo, a temporary data directory, a free port), submits a few
requests with the synthetic captures from several branches (one of them back from a
supplement round, so its history shows), then on a private Xvfb opens the console as
an authorizer, waits until the item and its images are drawn and grabs the window to
``console.png``; then opens the supervisor view and grabs ``supervisor.png``.

Chinese business names need a CJK font (``fc-list :lang=zh``; Debian:
fonts-wqy-microhei or fonts-noto-cjk): without one the pictures are still made, with
a warning, and Tk draws placeholder boxes for those glyphs."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import tkinter as tk
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from authorizer_console.client import AuthorizerClient
from authorizer_console.demo import DEMO_PASSWORD, Demo, Plan, pick_port
from authorizer_console.tk_app import ConsoleApp
from authorizer_console.tk_item import ItemScreen
from authorizer_console.tk_supervisor import SupervisorScreen
from authorizer_console.xvfb import grab, xvfb, xvfb_available
from teller_client import synthetic
from teller_client.client import TellerClient, new_request

WINDOW = (1280, 800)
STANDARD = ("ID_FRONT", "ID_BACK", "VOUCHER")
# (teller, business type, amount in CNY fen, customer, memo): a morning's mix from
# four branches, all under the on-site review threshold.
OTHERS = (
    ("teller-2", "CASH_DEPOSIT", 8_650_000, "Wang Fang", ""),
    ("teller-3", "REMITTANCE", 12_800_000, "Li Na", "汇往上海 / to Shanghai"),
    ("teller-4", "ACCOUNT_OPEN", 100_000, "Zhao Min", ""),
    ("teller-5", "WEALTH_PURCHASE", 30_000_000, "Chen Jing", ""),
    ("teller-6", "CASH_WITHDRAWAL", 4_500_000, "Liu Lei", ""),
    ("teller-7", "CARD_CASH_ADVANCE", 300_000, "Yang Jun", ""),
    ("teller-8", "ACCOUNT_CLOSE", 1_230_000, "Huang Tao", ""),
    ("teller-2", "CASH_TO_ACCOUNT_TRANSFER", 5_600_000, "Zhou Ming", ""),
)
SHOWCASE = "demo-20261124-0001"


def cjk_font_present() -> bool:
    if shutil.which("fc-list") is None:
        return False
    found = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False)
    return bool(found.stdout.strip())


def _images(kinds: Sequence[str], seed: int) -> list[tuple[str, bytes]]:
    return [(kind, synthetic.image_for_kind(kind, seed=seed)) for kind in kinds]


async def populate(target: str) -> None:
    """The queue the pictures show: the showcase item (urgent, back from a supplement
    round, so first in line) and a mix behind it, two of them already decided."""
    async with (
        TellerClient(target, "teller-1", DEMO_PASSWORD) as teller,
        AuthorizerClient(target, "authorizer-1", DEMO_PASSWORD) as authorizer,
    ):
        showcase = new_request(
            "CASH_WITHDRAWAL", 4_860_050, "CNY", "6222020200004821", "Zhang Wei",
            memo="客户出国留学缴费 / tuition abroad", urgent=True, request_id=SHOWCASE,
            preparation_seconds=48,
        )  # fmt: skip
        await teller.submit(showcase, _images(STANDARD, 0))
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(
            offer.request.request_id, offer.lease.fencing_token, "ask",
            kinds=["CUSTOMER_PHOTO"], note="photo of the customer at the counter, please",
        )  # fmt: skip
        for n, (user, business, amount, customer, memo) in enumerate(OTHERS, start=2):
            kinds = (*STANDARD, "CUSTOMER_PHOTO") if business == "ACCOUNT_OPEN" else STANDARD
            async with TellerClient(target, user, DEMO_PASSWORD) as other:
                message = new_request(
                    business, amount, "CNY", f"62220202{n:08d}", customer, memo=memo,
                    request_id=f"demo-20261124-{n:04d}", preparation_seconds=30 + n,
                )  # fmt: skip
                await other.submit(message, _images(kinds, n % 3))
        for outcome in ("approve", "reject", "approve"):
            offer = await authorizer.next(timeout=10)
            await authorizer.decide(
                offer.request.request_id,
                offer.lease.fencing_token,
                outcome,
                reason_code="SIGNATURE_MISMATCH" if outcome == "reject" else "",
            )
        await teller.supply(SHOWCASE, _images(("CUSTOMER_PHOTO",), 1), note="recaptured")
    # A move up waiting for a second supervisor (R6), so that table shows one.
    async with AuthorizerClient(target, "supervisor-2", DEMO_PASSWORD) as supervisor:
        await supervisor.request_move(
            "demo-20261124-0005", "customer waiting at the counter for 40 minutes"
        )


def pump(root: tk.Tk, until: Callable[[], bool], within_s: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + within_s
    while not until():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the window never showed {what}")
        root.update()
        time.sleep(0.02)


def settle(root: tk.Tk, seconds: float = 0.6) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        root.update()
        time.sleep(0.02)


def window_shot(root: tk.Tk, display: str) -> Image.Image:
    x, y = root.winfo_rootx(), root.winfo_rooty()
    return grab(display, (x, y, x + root.winfo_width(), y + root.winfo_height()))


def open_console(target: str, user: str) -> tuple[tk.Tk, ConsoleApp]:
    root = tk.Tk()
    app = ConsoleApp(root, target, user, DEMO_PASSWORD)
    root.geometry(f"{WINDOW[0]}x{WINDOW[1]}+0+0")
    app.log_in()
    return root, app


def console_picture(target: str, display: str) -> Image.Image:
    root, app = open_console(target, "authorizer-2")
    try:
        pump(root, lambda: isinstance(app.screen, ItemScreen), what="the item screen")
        screen = app.screen
        assert isinstance(screen, ItemScreen)

        def drawn() -> bool:
            item = screen.model.item
            return (
                item is not None
                and screen.model.view is not None
                and len(screen.model.images) == len(item.images)
            )

        pump(root, drawn, what="the item with all its images")
        # The supplied photo of the customer: the image the supplement round asked for.
        item = screen.model.item
        assert item is not None
        kinds = [image.kind for image in item.images]
        if "CUSTOMER_PHOTO" in kinds:
            screen.model.select_image(kinds.index("CUSTOMER_PHOTO"))
            screen.redraw()
        settle(root)
        return window_shot(root, display)
    finally:
        app.close()


def supervisor_picture(target: str, display: str) -> Image.Image:
    root, app = open_console(target, "supervisor-1")
    try:
        pump(root, lambda: isinstance(app.screen, SupervisorScreen), what="the supervisor view")
        screen = app.screen
        assert isinstance(screen, SupervisorScreen)
        pump(root, lambda: len(screen.waiting.get_children()) > 0, what="the waiting list")
        settle(root, 1.5)
        return window_shot(root, display)
    finally:
        app.close()


def save(image: Image.Image, path: Path) -> None:
    # A 256-colour palette keeps a UI screenshot small and still sharp; the photos in
    # it lose a little, which a README picture can afford.
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)", flush=True)


def make(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="authq-shots-") as scratch:
        demo = Demo(Plan(data_dir=Path(scratch), port=pick_port(0)))
        try:
            demo.start_server()
            asyncio.run(populate(demo.plan.target))
            with xvfb((WINDOW[0] + 40, WINDOW[1] + 40)) as display:
                save(console_picture(demo.plan.target, display), out_dir / "console.png")
                save(supervisor_picture(demo.plan.target, display), out_dir / "supervisor.png")
        finally:
            demo.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m authorizer_console.screenshots",
        description="Screenshots of the console and the supervisor view for the README.",
    )
    parser.add_argument(
        "out_dir", type=Path, nargs="?", default=Path(__file__).parent / "screenshots"
    )
    args = parser.parse_args(argv)
    if not xvfb_available():
        print("screenshots: Xvfb is not on PATH (Debian: apt install xvfb)", file=sys.stderr)
        return 2
    if not cjk_font_present():
        print(
            "screenshots: warning: no CJK font (fc-list :lang=zh is empty), Chinese names "
            "will show as boxes; Debian: apt install fonts-wqy-microhei",
            file=sys.stderr,
        )
    make(args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
