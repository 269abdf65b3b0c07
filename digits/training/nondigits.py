"""Non-digits made by the project: what people draw or upload that is not one digit.

Five families, each drawn on a 280x280 white page in black ink, the way the drawing page and most uploads look:

- ``letters``: letters and symbols in the fonts the project's own dependencies ship (Pillow's default font and
  matplotlib's), varied in size, slant, stroke thickness and position. Characters that people also write as
  digits (``LOOKS_LIKE_DIGITS``) are left out: an O is a fair 0.
- ``scribbles``: smooth random strokes of the page's pen.
- ``shapes``: squares, triangles, stars, crosses, hatching, grids, arrows, smileys and spirals, hand-jittered.
  No circles or ovals: those are zeros.
- ``noise``: uniform and Gaussian noise, salt and pepper, blotches, stripes and checkerboards.
- ``two_digits``: two real digits side by side, apart or touching.

``render(family, rng, digits)`` draws one page; ``family_pixels`` turns many into model rows through the same
``imaging`` path an uploaded picture takes. A family's pages depend only on the seed: the trainer and
``bench.open_set`` draw disjoint seeds for what they fit or calibrate on and for what they measure on.
"""

from __future__ import annotations

import functools
import itertools
import math
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from digits.modelling import imaging

PAGE: Final = 280
PEN: Final = PAGE // 14  # the drawing page's pen: a fourteenth of the pad
FAMILIES: Final = ("letters", "scribbles", "shapes", "noise", "two_digits")
# Written as digits often enough that calling them "not a digit" would be wrong: 0 (O o Q D U u), 1 (I l i j J
# | ! / \ ( ) [ ] { } 7-like T), 2 (Z z), 4 (y), 5 (S s $), 6 (b G), 8 (B &), 9 (g q a), and the marks too small
# to be a drawing at all (. , : ; ' " ` - _ ~).
LOOKS_LIKE_DIGITS: Final = "OoQDUuIlijJ|!/\\()[]{}TZzySs$bGB&gqa.,:;'\"`-_~"
CHARACTERS: Final = "".join(c for c in string.ascii_letters + string.punctuation if c not in LOOKS_LIKE_DIGITS)

Grey = npt.NDArray[np.uint8]
Rows = npt.NDArray[np.float32]


@functools.cache
def font_files() -> tuple[str, ...]:
    """Outline fonts that ship with matplotlib (a dependency), text faces only; Pillow's own default comes extra."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "STIXGeneral", "cmr10", "cmss10", "cmtt10", "cmti10")
    return ("", *sorted(str(p) for p in folder.glob("*.ttf") if p.stem.split("-")[0] in faces))


def _font(rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    files = font_files()
    return _loaded(files[int(rng.integers(len(files)))] if len(files) else "", size)


@functools.lru_cache(maxsize=512)
def _loaded(file: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font at a size, read once: "" is Pillow's own."""
    return ImageFont.truetype(file, size) if file else ImageFont.load_default(size)


def _page() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    page = Image.new("L", (PAGE, PAGE), 255)
    return page, ImageDraw.Draw(page)


def _pen(rng: np.random.Generator) -> int:
    return int(rng.integers(PEN // 2, PEN * 3 // 2))


def _stroke(draw: ImageDraw.ImageDraw, points: npt.NDArray[np.float64], width: int) -> None:
    """A polyline with round joints and ends, as a pen draws it."""
    path = [(float(x), float(y)) for x, y in points]
    draw.line(path, fill=0, width=width, joint="curve")
    for x, y in (path[0], path[-1]):
        draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=0)


def _jitter(points: npt.NDArray[np.float64], rng: np.random.Generator, amount: float = 4.0) -> npt.NDArray[np.float64]:
    """A hand's wobble: points resampled densely and nudged by a smooth random offset."""
    dense = []
    for a, b in itertools.pairwise(points):
        steps = max(2, int(np.hypot(*(b - a)) // 8))
        dense.append(a + (b - a) * np.linspace(0, 1, steps, endpoint=False)[:, None])
    line = np.concatenate([*dense, points[-1:]])
    wobble = np.cumsum(rng.normal(0, amount / 4, line.shape), axis=0)
    wobble -= np.linspace(wobble[0], wobble[-1], len(line))
    return np.asarray(line + wobble, dtype=np.float64)


def _letter(rng: np.random.Generator, _pool: Rows | None) -> Grey:
    char = CHARACTERS[int(rng.integers(len(CHARACTERS)))]
    size = int(rng.integers(11, 23)) * 10  # sizes in steps of 10 px: a few fonts to load, each once
    font = _font(rng, size)
    glyph = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(glyph).text((size // 2, size // 3), char, fill=255, font=font,
                               stroke_width=int(rng.integers(0, 8)), stroke_fill=255)
    slant = float(rng.uniform(-0.35, 0.35))
    glyph = glyph.transform(glyph.size, Image.Transform.AFFINE, (1, slant, -slant * size, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR)
    glyph = glyph.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
    box = glyph.getbbox()
    page, _draw = _page()
    if box is None:
        return np.asarray(page)
    ink = glyph.crop(box)
    scale = min(1.0, (PAGE - 20) / max(ink.size))
    ink = ink.resize((max(1, int(ink.width * scale)), max(1, int(ink.height * scale))))
    left = int(rng.integers(0, PAGE - ink.width + 1))
    top = int(rng.integers(0, PAGE - ink.height + 1))
    page.paste(0, (left, top), ink)
    return np.asarray(page)


def _scribble(rng: np.random.Generator, _: Rows | None) -> Grey:
    page, draw = _page()
    for _stroke_index in range(int(rng.integers(1, 4))):
        anchors = rng.uniform(30, PAGE - 30, (int(rng.integers(4, 12)), 2))
        _stroke(draw, _jitter(anchors, rng, 6.0), _pen(rng))
    return np.asarray(page)


def _polygon(rng: np.random.Generator, corners: int, star: bool = False) -> npt.NDArray[np.float64]:
    centre = rng.uniform(100, 180, 2)
    radius = rng.uniform(60, 110)
    angles = rng.uniform(0, 2 * math.pi) + np.linspace(0, 2 * math.pi, corners * (2 if star else 1), endpoint=False)
    radii = np.where(np.arange(len(angles)) % 2 == 1, radius * 0.4, radius) if star else np.full(len(angles), radius)
    stretch = rng.uniform(0.7, 1.3, 2)
    points = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None] * stretch
    return np.concatenate([points, points[:1]])


def _shape(rng: np.random.Generator, _: Rows | None) -> Grey:
    page, draw = _page()
    pen = _pen(rng)
    kind = int(rng.integers(9))
    if kind <= 2:  # triangle, square, pentagon
        _stroke(draw, _jitter(_polygon(rng, 3 + kind), rng), pen)
    elif kind == 3:  # a star
        _stroke(draw, _jitter(_polygon(rng, int(rng.integers(5, 7)), star=True), rng), pen)
    elif kind == 4:  # a cross: x or +
        tilt = rng.choice([0.0, math.pi / 4]) + rng.normal(0, 0.15)
        for angle in (tilt, tilt + math.pi / 2):
            reach = rng.uniform(70, 120) * np.array([math.cos(angle), math.sin(angle)])
            _stroke(draw, _jitter(np.array([140 - reach, 140 + reach]), rng), pen)
    elif kind in (5, 6):  # hatching, or a grid
        gap = rng.uniform(25, 50)
        angle = rng.uniform(0, math.pi)
        for direction in ((angle,) if kind == 5 else (angle, angle + math.pi / 2)):
            along = np.array([math.cos(direction), math.sin(direction)])
            across = np.array([-along[1], along[0]])
            for offset in np.arange(-100, 100, gap):
                centre = 140 + across * offset
                _stroke(draw, _jitter(np.array([centre - along * 100, centre + along * 100]), rng), max(4, pen // 2))
    elif kind == 7:  # a smiley: a face with two eyes and a mouth
        r = rng.uniform(80, 120)
        draw.ellipse((140 - r, 140 - r, 140 + r, 140 + r), outline=0, width=pen)
        for side in (-1, 1):
            x = 140 + side * r * 0.4
            draw.ellipse((x - pen, 140 - r * 0.35 - pen, x + pen, 140 - r * 0.35 + pen), fill=0)
        draw.arc((140 - r * 0.55, 140 - r * 0.3, 140 + r * 0.55, 140 + r * 0.6), 20, 160, fill=0, width=pen)
    else:  # a square spiral
        points, step, position = [np.array([140.0, 140.0])], rng.uniform(18, 30), np.array([140.0, 140.0])
        for turn in range(int(rng.integers(5, 9))):
            heading = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)][turn % 4])
            position = position + heading * step * (turn // 2 + 1)
            points.append(position.copy())
        _stroke(draw, _jitter(np.clip(np.array(points), 10, PAGE - 10), rng), max(4, pen // 2))
    return np.asarray(page)


def _noise(rng: np.random.Generator, _: Rows | None) -> Grey:
    kind = int(rng.integers(6))
    if kind == 0:  # black-and-white noise
        page = np.where(rng.random((PAGE, PAGE)) < rng.uniform(0.2, 0.6), 0, 255)
    elif kind == 1:  # grey uniform noise
        page = rng.integers(0, 256, (PAGE, PAGE))
    elif kind == 2:  # Gaussian noise on grey
        page = np.clip(rng.normal(128, rng.uniform(30, 90), (PAGE, PAGE)), 0, 255)
    elif kind == 3:  # blotches: blurred noise, thresholded
        small = Image.fromarray((rng.random((PAGE // 10, PAGE // 10)) * 255).astype(np.uint8))
        smooth = np.asarray(small.resize((PAGE, PAGE), Image.Resampling.BICUBIC), dtype=np.float64)
        page = np.where(smooth < np.quantile(smooth, rng.uniform(0.15, 0.45)), 0, 255)
    elif kind == 4:  # stripes
        period = rng.uniform(12, 40)
        angle = rng.uniform(0, math.pi)
        y, x = np.mgrid[0:PAGE, 0:PAGE]
        page = np.where(np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period) > 0, 0, 255)
    else:  # a checkerboard
        cell = int(rng.integers(14, 48))
        y, x = np.mgrid[0:PAGE, 0:PAGE]
        page = np.where(((x // cell) + (y // cell)) % 2 == 0, 0, 255)
    return np.asarray(page, dtype=np.uint8)


def _two_digits(rng: np.random.Generator, pool: Rows | None) -> Grey:
    """Two digits of ``pool`` (MNIST rows) side by side, each 28x28 scaled to the page, apart or touching."""
    assert pool is not None and len(pool) > 1, "two_digits draws its digits from a pool"
    first, second = (pool[int(i)].reshape(28, 28) for i in rng.choice(len(pool), 2, replace=False))
    scale = rng.uniform(4.0, 5.5)
    side = int(28 * scale)
    crops = []
    for digit in (first, second):
        cols = np.flatnonzero(digit.any(axis=0))
        tile = Image.fromarray(digit[:, cols[0] : cols[-1] + 1].astype(np.uint8))
        crops.append(tile.resize((max(1, int(tile.width * scale)), side), Image.Resampling.BILINEAR))
    gap = int(rng.integers(-PEN // 2, PEN * 3))
    width = crops[0].width + gap + crops[1].width
    ink = Image.new("L", (max(width, crops[0].width, crops[1].width), side), 0)
    ink.paste(crops[0], (0, 0))
    ink.paste(Image.fromarray(np.maximum(np.asarray(ink.crop((crops[0].width + gap, 0, crops[0].width + gap
                                                                + crops[1].width, side))), np.asarray(crops[1]))),
              (crops[0].width + gap, 0))
    fit = min(1.0, (PAGE - 10) / max(ink.size))
    ink = ink.resize((max(1, int(ink.width * fit)), max(1, int(ink.height * fit))), Image.Resampling.BILINEAR)
    page, _draw = _page()
    left = int(rng.integers(0, PAGE - ink.width + 1))
    top = int(rng.integers(0, PAGE - ink.height + 1))
    page.paste(0, (left, top), ink)
    return np.asarray(page.filter(ImageFilter.GaussianBlur(0.5)))


RENDERERS: Final[dict[str, Callable[[np.random.Generator, Rows | None], Grey]]] = {
    "letters": _letter, "scribbles": _scribble, "shapes": _shape, "noise": _noise, "two_digits": _two_digits,
}


def render(family: str, rng: np.random.Generator, digits: Rows | None = None) -> Grey:
    """One 280x280 page of ``family``: grey levels, black ink on white."""
    return RENDERERS[family](rng, digits)


def family_pages(family: str, count: int, seed: Sequence[int], digits: Rows | None = None) -> list[Grey]:
    """``count`` pages of ``family``, the same for the same ``seed`` (a sequence: purpose, job seed, ...)."""
    rng = np.random.default_rng([*seed, FAMILIES.index(family)])
    return [render(family, rng, digits) for _ in range(count)]


def readings(pages: Sequence[Grey]) -> list[imaging.Reading]:
    """What inference reads from each page, as from an upload: the model's row and the marks of ink."""
    return [imaging.read_grey(page.astype(np.float32)) for page in pages]
