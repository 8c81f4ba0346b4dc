"""A private X display (Xvfb) for the Tk tests and the README screenshots."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageGrab


def xvfb_available() -> bool:
    return shutil.which("Xvfb") is not None


def _free_display() -> int:
    for number in range(90, 190):
        if (
            not Path(f"/tmp/.X11-unix/X{number}").exists()
            and not Path(f"/tmp/.X{number}-lock").exists()
        ):
            return number
    raise RuntimeError("no free X display number between :90 and :189")


@contextlib.contextmanager
def xvfb(size: tuple[int, int] = (1400, 860)) -> Iterator[str]:
    """Starts Xvfb on a free display, sets DISPLAY for the block, stops it after."""
    number = _free_display()
    display = f":{number}"
    process = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Xvfb did not start on {display}")
            time.sleep(0.05)
        previous = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = display
        try:
            yield display
        finally:
            if previous is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = previous
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def grab(display: str, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """What the X display shows (optionally a box of it), as the X server has it."""
    return ImageGrab.grab(bbox=box, xdisplay=display).convert("RGB")
