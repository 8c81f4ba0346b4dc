"""The large image view's geometry: zoom, pan, rotate and fit, and rendering the
visible part with Pillow. No tkinter here: the Tk layer shows what ``render``
returns, and the tests check the maths headless.

The view holds a scale relative to "fit" (1.0 shows the whole rotated image as large
as the viewport allows) and a centre in image coordinates of the rotated image, so
zooming keeps the point under the centre still and rotating re-fits."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

from PIL import Image, ImageOps

ZOOM_STEP = 1.25
MIN_ZOOM = 1.0 / 8
MAX_ZOOM = 16.0
PAN_FRACTION = 0.2  # of the viewport, per key press
BACKGROUND = (40, 42, 48)
THUMB_SIZE = (120, 90)


def decode(data: bytes) -> Image.Image:
    """Bytes -> an RGB image, upright per its EXIF orientation (phone captures)."""
    with Image.open(io.BytesIO(data)) as opened:
        upright = ImageOps.exif_transpose(opened)
        return upright.convert("RGB")


def thumbnail(image: Image.Image, size: tuple[int, int] = THUMB_SIZE) -> Image.Image:
    """A small copy for the strip, letterboxed to exactly ``size``."""
    small = image.copy()
    small.thumbnail(size, Image.Resampling.BILINEAR)
    framed = Image.new("RGB", size, BACKGROUND)
    framed.paste(small, ((size[0] - small.width) // 2, (size[1] - small.height) // 2))
    return framed


@dataclass(frozen=True, slots=True)
class ViewState:
    """Zoom relative to fit, centre in rotated-image pixels, rotation in degrees
    clockwise (0, 90, 180, 270)."""

    zoom: float = 1.0
    center_x: float | None = None
    center_y: float | None = None
    rotation: int = 0


class ImageView:
    """One image in a viewport of ``viewport`` pixels."""

    def __init__(self, image: Image.Image, viewport: tuple[int, int]) -> None:
        self.image = image
        self.viewport = (max(1, viewport[0]), max(1, viewport[1]))
        self.state = ViewState()
        self._rotated: dict[int, Image.Image] = {0: image}

    # -- geometry ----------------------------------------------------------------

    def rotated_size(self) -> tuple[int, int]:
        w, h = self.image.size
        return (h, w) if self.state.rotation in (90, 270) else (w, h)

    def fit_scale(self) -> float:
        w, h = self.rotated_size()
        return min(self.viewport[0] / w, self.viewport[1] / h)

    def scale(self) -> float:
        """Screen pixels per image pixel."""
        return self.fit_scale() * self.state.zoom

    def center(self) -> tuple[float, float]:
        w, h = self.rotated_size()
        x = self.state.center_x if self.state.center_x is not None else w / 2
        y = self.state.center_y if self.state.center_y is not None else h / 2
        return x, y

    def visible_box(self) -> tuple[float, float, float, float]:
        """The part of the rotated image shown, in its pixels (may reach past the
        edges when zoomed out: that part is background)."""
        scale = self.scale()
        cx, cy = self.center()
        half_w = self.viewport[0] / scale / 2
        half_h = self.viewport[1] / scale / 2
        return cx - half_w, cy - half_h, cx + half_w, cy + half_h

    def _clamped(self, state: ViewState) -> ViewState:
        """Keeps the centre where some of the image stays in view."""
        w, h = (
            (self.image.height, self.image.width)
            if state.rotation in (90, 270)
            else self.image.size
        )
        if state.center_x is None or state.center_y is None:
            return state
        return replace(
            state,
            center_x=min(max(state.center_x, 0.0), float(w)),
            center_y=min(max(state.center_y, 0.0), float(h)),
        )

    # -- actions -----------------------------------------------------------------

    def resize(self, viewport: tuple[int, int]) -> None:
        self.viewport = (max(1, viewport[0]), max(1, viewport[1]))

    def fit(self) -> None:
        self.state = ViewState(rotation=self.state.rotation)

    def zoom(self, factor: float) -> None:
        zoom = min(MAX_ZOOM, max(MIN_ZOOM, self.state.zoom * factor))
        cx, cy = self.center()
        self.state = replace(self.state, zoom=zoom, center_x=cx, center_y=cy)

    def zoom_in(self) -> None:
        self.zoom(ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom(1 / ZOOM_STEP)

    def pan(self, dx_screen: float, dy_screen: float) -> None:
        """Moves the picture by screen pixels (positive: the view moves right/down
        over the image)."""
        scale = self.scale()
        cx, cy = self.center()
        self.state = self._clamped(
            replace(self.state, center_x=cx + dx_screen / scale, center_y=cy + dy_screen / scale)
        )

    def pan_step(self, x: int, y: int) -> None:
        """A key press: ``x``/``y`` in -1, 0, 1."""
        self.pan(x * self.viewport[0] * PAN_FRACTION, y * self.viewport[1] * PAN_FRACTION)

    def rotate(self, clockwise: bool = True) -> None:
        """Quarter turn; the view fits the turned image again."""
        rotation = (self.state.rotation + (90 if clockwise else 270)) % 360
        self.state = ViewState(rotation=rotation)

    # -- drawing -----------------------------------------------------------------

    def rotated_image(self) -> Image.Image:
        rotation = self.state.rotation
        if rotation not in self._rotated:
            # PIL rotates counter-clockwise; the view's rotation is clockwise.
            self._rotated[rotation] = self.image.rotate(-rotation, expand=True)
        return self._rotated[rotation]

    def render(self) -> Image.Image:
        """The viewport's picture: only the visible part is scaled, so a deep zoom
        into a large capture costs no more than a fit."""
        source = self.rotated_image()
        left, top, right, bottom = self.visible_box()
        scale = self.scale()
        canvas = Image.new("RGB", self.viewport, BACKGROUND)
        crop = (
            max(0, int(left)),
            max(0, int(top)),
            min(source.width, int(right + 1)),
            min(source.height, int(bottom + 1)),
        )
        if crop[2] <= crop[0] or crop[3] <= crop[1]:
            return canvas
        part = source.crop(crop)
        size = (max(1, round(part.width * scale)), max(1, round(part.height * scale)))
        resample = Image.Resampling.BILINEAR if scale < 2 else Image.Resampling.NEAREST
        canvas.paste(
            part.resize(size, resample),
            (round((crop[0] - left) * scale), round((crop[1] - top) * scale)),
        )
        return canvas
