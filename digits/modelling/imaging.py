"""Turn what a caller sends (raw pixels or an encoded picture) into the 28x28 digit the model expects.

The model was trained on MNIST, so every input is made to look like an MNIST digit: light ink on a
black background, the ink's bounding box scaled to 20 px on its longest side with anti-aliasing, and
placed in a 28x28 field with its centre of mass at pixel (14, 14) — the procedure LeCun et al. used.

Everything here treats the input as hostile: sizes are checked before any pixel is decoded, only a
few well-known formats are parsed, and anything Pillow fails on comes back as ``InvalidInput``.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from digits.errors import InvalidInput, TooLarge
from digits.mnist import CENTRE, N_PIXELS, SIDE
from digits.modelling import marks

__all__ = ["Reading", "declared_pixels", "pixel_bytes_to_image", "pixels_to_image", "read_grey", "read_image",
           "read_picture"]

# MNIST fitted each digit into a 20x20 box, leaving a 4 px margin for centring by mass.
DIGIT_BOX = 20

# Pillow format ids we agree to parse; every other decoder stays out of reach of untrusted bytes.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
_ALLOWED_WORDS = "PNG, JPEG, BMP, GIF or WebP"

# Large pictures are reduced (JPEG: decoded at a reduced scale) until their long side is below twice this, before
# any per-pixel work; a digit that fills a tenth of such a picture is still 100 px tall, five times what it becomes.
WORKING_SIDE = 1024

# Ink must differ from the background by at least this many grey levels (of 255), so that a flat
# image or faint sensor/JPEG noise is reported as "no digit" rather than blown up into a guess.
MIN_CONTRAST = 24.0
# After stretching, anything below this fraction of the strongest ink is background noise or paper
# texture; MNIST backgrounds are exactly 0 and the model has never seen anything else.
NOISE_FLOOR = 0.2
# A transparent image whose opaque pixels cover less than this is a drawing (strokes on nothing);
# more than this and it is a picture with transparent margins.
DRAWING_MAX_COVERAGE = 0.5

# Pillow raises many exception types on bad input; all of them mean "could not read the image".
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    ZeroDivisionError,
    OverflowError,
    MemoryError,
    RuntimeError,
    zlib.error,
)

# Magic numbers of formats people commonly send, so the refusal can say what was sent.
_KNOWN_OTHER_FORMATS = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"<svg", "SVG"),
    (b"<?xml", "SVG/XML"),
)

FloatImage = npt.NDArray[np.float32]


# ---------------------------------------------------------------------------------------------
# Raw pixels
# ---------------------------------------------------------------------------------------------


def pixels_to_image(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Validate 784 grayscale values (0..255, light ink on dark, row-major, as in MNIST).

    Returns a float32 array of shape (784,); a 28x28 array is accepted and flattened row-major.
    Raises InvalidInput for wrong count, NaN/inf, or values outside [0, 255].
    """
    arr = _as_number_array(values)
    if arr.shape == (SIDE, SIDE):
        arr = arr.reshape(-1)  # a 28x28 grid is the same thing, row-major
    if arr.ndim != 1 or arr.size != N_PIXELS:
        got = arr.size if arr.ndim == 1 else f"an array of shape {arr.shape}"
        raise InvalidInput(f"expected {N_PIXELS} pixels ({SIDE}x{SIDE}), got {got}")
    # This runs for every request: two reductions decide (NaN fails both comparisons); the slow,
    # precise check only runs to word the error. Comparing in the values' own dtype sees exactly what was sent.
    if not (arr.min() >= 0 and arr.max() <= 255):
        _check_pixel_values(arr.astype(np.float64))
    return arr.astype(np.float32, copy=False)


def pixel_bytes_to_image(data: bytes) -> FloatImage:
    """784 bytes, one grey level (0..255) each, light ink on dark, row-major: every value is valid by its type."""
    if len(data) != N_PIXELS:
        raise InvalidInput(f"expected {N_PIXELS} pixel bytes ({SIDE}x{SIDE}), got {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).astype(np.float32)


def _as_number_array(values: Sequence[float] | np.ndarray) -> npt.NDArray[np.generic]:
    try:
        raw = np.asarray(values)  # a protobuf repeated field converts through the buffer protocol: no copy
    except (ValueError, TypeError) as exc:  # ragged nesting and the like
        raise InvalidInput(f"pixels must be a flat list of numbers: {exc}") from None
    if raw.dtype.kind not in "biuf":
        raise InvalidInput(f"pixels must be numbers from 0 to 255, got values of type {raw.dtype}")
    return raw


def _check_pixel_values(arr: npt.NDArray[np.float64]) -> None:
    rule = "pixels must be finite numbers from 0 to 255"
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0) | (arr > 255))
    if bad.size == 0:
        return
    index = int(bad[0])
    value = float(arr[index])
    if math.isnan(value):
        what = "NaN"
    elif math.isinf(value):
        what = "infinite"
    else:
        what = f"{value:g}, outside 0..255"
    raise InvalidInput(f"pixel {index} is {what}; {rule}")


# ---------------------------------------------------------------------------------------------
# Encoded images
# ---------------------------------------------------------------------------------------------


def declared_pixels(data: bytes, *, max_bytes: int, max_pixels: int) -> int:
    """The pixels an encoded image declares in its header, checked against the limits; nothing is decoded.

    Cheap (a header parse), so callers can budget decoding work before queueing it.
    Raises what ``read_image`` would for the same bytes' size and header.
    """
    _check_byte_size(data, max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
                _check_declared_size(im, max_pixels)
                width, height = im.size
                return int(width * height)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise TooLarge(f"image has too many pixels to decode safely ({exc}); the limit is {max_pixels:,}") from None
        except UnidentifiedImageError:
            raise InvalidInput(_unsupported_message(data)) from None
        except _DECODE_ERRORS as exc:
            raise InvalidInput(f"could not read the image: {_describe(exc)}") from None


class Reading(NamedTuple):
    """What a picture holds for the model: the 28x28 digit (784 float32, 0..255) and how many digit-sized marks
    of ink stand side by side in it (``digits.modelling.marks``)."""

    row: npt.NDArray[np.float32]
    marks: int


def read_picture(data: bytes, *, max_bytes: int, max_pixels: int) -> Reading:
    """Decode an encoded image (PNG, JPEG, BMP, GIF, WebP; any size) into the digit the model expects.

    The row is float32 shape (784,) (28x28 row-major), values 0..255, light ink on a dark background, exactly
    like MNIST. Raises InvalidInput (not an image, wrong format, no digit in it) or TooLarge (bytes or pixels).
    """
    _check_byte_size(data, max_bytes)
    grey, alpha = _decode(data, max_pixels)
    if alpha is not None:
        grey = _flatten_transparency(grey, alpha)
    return read_grey(grey)


def read_image(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """``read_picture``'s row alone: for data sets, where each picture is known to hold one digit."""
    return read_picture(data, max_bytes=max_bytes, max_pixels=max_pixels).row


def read_grey(grey: FloatImage) -> Reading:
    """A decoded picture's grey levels (any size, any polarity) as the model reads them."""
    ink = _ink_on_black(grey)
    return Reading(_mnist_layout(ink), marks.digit_sized(ink))


def _check_byte_size(data: bytes, max_bytes: int) -> None:
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidInput(f"the image must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InvalidInput("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise TooLarge(f"image is {len(data):,} bytes; the limit is {max_bytes:,}")


def _decode(data: bytes, max_pixels: int) -> tuple[FloatImage, FloatImage | None]:
    """Decode to grey levels 0..255 and, if the image has any transparency, alpha 0..1."""
    # Pillow signals would-be decompression bombs with a warning below its hard limit; turn it into
    # an exception so it cannot slip through (our own max_pixels check normally fires first anyway).
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
                _check_declared_size(im, max_pixels)
                im.seek(0)  # animated GIF/WebP/PNG: the first frame is the picture
                if im.format == "JPEG":
                    # JPEG decodes at 1/2, 1/4 or 1/8 scale for a fraction of the memory and time.
                    im.draft(im.mode, _working_size(im.size))
                im.load()
                # Grey (and alpha) at working size first: every later step, turning upright included, is cheap.
                small = _grey_at_working_size(im)
                ImageOps.exif_transpose(small, in_place=True)
                return _to_arrays(small)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise TooLarge(
                f"image has too many pixels to decode safely ({exc}); the limit is {max_pixels:,}"
            ) from None
        except UnidentifiedImageError:
            raise InvalidInput(_unsupported_message(data)) from None
        except _DECODE_ERRORS as exc:
            raise InvalidInput(f"could not read the image: {_describe(exc)}") from None


def _check_declared_size(im: Image.Image, max_pixels: int) -> None:
    # Image.open only parsed the header, so this runs before a single pixel is decompressed.
    width, height = im.size
    if width <= 0 or height <= 0:
        raise InvalidInput(f"could not read the image: it declares a size of {width}x{height}")
    if width * height > max_pixels:
        raise TooLarge(
            f"image is {width:,}x{height:,} = {width * height:,} pixels; the limit is {max_pixels:,}"
        )


def _unsupported_message(data: bytes) -> str:
    head = data[:8].lstrip()
    for magic, name in _KNOWN_OTHER_FORMATS:
        if head.startswith(magic):
            return f"{name} images are not accepted; send a {_ALLOWED_WORDS} image"
    return f"could not read the image: it is not a {_ALLOWED_WORDS} image (or it is damaged)"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _working_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size a large picture is reduced to before any per-pixel work (never below WORKING_SIDE on its long
    side): the digit ends up 20 px tall, so more resolution only costs memory and time."""
    longest = max(size)
    factor = max(1, longest // WORKING_SIDE)
    return max(1, size[0] // factor), max(1, size[1] // factor)


def _grey_at_working_size(im: Image.Image) -> Image.Image:
    """The picture as grey ("L"), grey with alpha ("LA") or wide grey ("I"/"F"), reduced to working size.

    Only one full-size copy is ever made (the grey conversion); EXIF data travels along for turning upright.
    """
    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        grey = im
    elif im.has_transparency_data:
        # RGBA is the one conversion that honours every kind of transparency (alpha band, palette
        # transparency, tRNS colour key).
        grey = im if im.mode == "LA" else (im if im.mode == "RGBA" else im.convert("RGBA")).convert("LA")
    else:
        grey = im.convert("L")
    factor = max(grey.size) // WORKING_SIDE
    return grey.reduce(factor) if factor >= 2 else grey


def _to_arrays(im: Image.Image) -> tuple[FloatImage, FloatImage | None]:
    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        return _wide_grey(im), None
    if im.mode == "LA":
        grey = np.asarray(im.getchannel("L"), dtype=np.float32)
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
        return grey, alpha
    return np.asarray(im, dtype=np.float32), None


def _wide_grey(im: Image.Image) -> FloatImage:
    # 16/32-bit grey (16-bit PNG): Pillow's convert("L") clips instead of scaling, so scale here.
    grey = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = 255.0 if float(grey.max(initial=0.0)) <= 255.0 else 65535.0
    result: FloatImage = np.clip(grey * (255.0 / top), 0.0, 255.0).astype(np.float32)
    return result


# ---------------------------------------------------------------------------------------------
# Transparency and polarity
# ---------------------------------------------------------------------------------------------


def _flatten_transparency(grey: FloatImage, alpha: FloatImage) -> FloatImage:
    """Composite onto the background the author meant; transparent means "nothing drawn here"."""
    if float(alpha.min()) >= 254.0 / 255.0:
        return grey  # alpha present but unused: an opaque image
    weight = float(alpha.sum())
    if weight < 1e-6:
        raise InvalidInput("no digit found: the image is fully transparent")
    if weight / alpha.size <= DRAWING_MAX_COVERAGE:
        # A drawing exported from a canvas: strokes (of any one colour) on transparency. Put them on
        # the colour that contrasts with the strokes, so alpha becomes ink coverage.
        stroke_tone = float((grey * alpha).sum()) / weight
        background = 255.0 if stroke_tone < 127.5 else 0.0
    else:
        # Mostly opaque: a picture with transparent margins. Fill the margins with the picture's own
        # dominant tone (its paper), so they vanish instead of framing the digit.
        background = float(np.median(grey[alpha >= 0.5])) if np.any(alpha >= 0.5) else 255.0
    flat: FloatImage = (grey * alpha + background * (1.0 - alpha)).astype(np.float32)
    return flat


# np.median and np.percentile cost tens of microseconds each in their general machinery, as much as the rest of a
# small image's reading; these compute exactly what they return (the same partition, the same arithmetic), for the
# flat, NaN-free arrays read here. tests/unit/test_imaging.py holds them equal to numpy's.


def median(values: npt.NDArray[np.floating[Any]]) -> float:
    """``float(np.median(values))`` for a NaN-free array."""
    flat = values.ravel()
    middle = flat.size // 2
    if flat.size % 2:
        return float(np.partition(flat, middle)[middle])
    low, high = np.partition(flat, [middle - 1, middle])[middle - 1 : middle + 1]
    return float((low + high) / flat.dtype.type(2))


def percentiles(values: npt.NDArray[np.floating[Any]], q: Sequence[float]) -> list[float]:
    """``[float(v) for v in np.percentile(values, q)]`` (linear interpolation) for a NaN-free array."""
    flat = values.ravel()
    last = flat.size - 1
    virtual = [last * (p / 100) for p in q]
    previous = [last if v >= last else max(math.floor(v), 0) for v in virtual]
    following = [last if v >= last else max(math.floor(v) + 1, 0) for v in virtual]
    ordered = np.partition(flat, sorted({0, last, *previous, *following}))
    result = []
    for v, i, j in zip(virtual, previous, following, strict=True):
        gamma = v - (last if v >= last else math.floor(v))
        difference = float(ordered[j] - ordered[i])  # in the array's own precision, as numpy subtracts
        low, high = float(ordered[i]), float(ordered[j])
        result.append(high - difference * (1 - gamma) if gamma >= 0.5 else low + difference * gamma)
    return result


def _border_level(grey: FloatImage) -> float:
    """The background tone: the median of the outer ring of pixels, where a digit rarely reaches."""
    height, width = grey.shape
    ring = max(1, min(height, width) // 20)
    if 2 * ring >= min(height, width):
        return median(grey)
    sides = (grey[:ring], grey[-ring:], grey[ring:-ring, :ring], grey[ring:-ring, -ring:])
    edges = np.concatenate([side.ravel() for side in sides])
    return median(edges)


def _ink_on_black(grey: FloatImage) -> FloatImage:
    """Make ink light on a clean 0 background, ink peak 255, whatever the paper tone or polarity."""
    background = _border_level(grey)
    lightest, darkest = percentiles(grey, (99.9, 0.1))
    dark_ink = background - darkest
    light_ink = lightest - background
    # Ink is whatever departs furthest from the background; on a tie, a light background means dark ink.
    if dark_ink > light_ink or (dark_ink == light_ink and background > 127.5):
        ink = background - grey
    else:
        ink = grey - background
    ink = np.clip(ink, 0.0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise InvalidInput(
            "no digit found: the image looks blank. Draw or photograph the digit darker or larger "
            f"(its ink stands out by {peak:.0f} grey levels; at least {MIN_CONTRAST:.0f} are needed)"
        )
    ink *= 255.0 / peak
    ink[ink < NOISE_FLOOR * 255.0] = 0.0
    result: FloatImage = ink.astype(np.float32)
    return result


# ---------------------------------------------------------------------------------------------
# MNIST layout: crop, fit to 20 px, centre by mass in 28x28
# ---------------------------------------------------------------------------------------------


def _mnist_layout(ink: FloatImage) -> np.ndarray:
    digit = _fit_to_box(_crop_to_ink(ink))
    field = _centre_by_mass(digit)
    peak = float(field.max())
    if peak <= 0.0:  # cannot happen after a successful crop, but never divide by zero
        raise InvalidInput("no digit found: the image has no ink")
    out: FloatImage = np.clip(field * (255.0 / peak), 0.0, 255.0).astype(np.float32)
    # Resampling leaves a faint haze (1e-5 and the like) around the strokes; MNIST is 8-bit, so
    # anything that would round to 0 there is 0 here.
    out[out < 0.5] = 0.0
    return out.reshape(-1)


def _crop_to_ink(ink: FloatImage) -> FloatImage:
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise InvalidInput("no digit found: the image has no ink")
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit_to_box(digit: FloatImage) -> FloatImage:
    """Scale so the longest side is 20 px, keeping the aspect ratio, anti-aliased like MNIST."""
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):  # already 20 px: Pillow would return an exact copy
        return np.clip(digit, 0.0, None).astype(np.float32, copy=False)
    # Pillow's "F" mode keeps float precision; LANCZOS anti-aliases on the way down (it widens its
    # kernel by the scale factor) and interpolates smoothly on the way up.
    source = Image.fromarray(np.ascontiguousarray(digit, dtype=np.float32))
    resized = source.resize(size, Image.Resampling.LANCZOS)
    fitted: FloatImage = np.clip(np.asarray(resized, dtype=np.float32), 0.0, None)
    return fitted


def _centre_by_mass(digit: FloatImage) -> FloatImage:
    """Place the digit in a 28x28 field so its centre of mass lands on pixel (14, 14)."""
    height, width = digit.shape
    total = float(digit.sum())
    rows, cols = np.indices(digit.shape, dtype=np.float64)
    centre_row = float((rows * digit).sum()) / total if total > 0 else (height - 1) / 2
    centre_col = float((cols * digit).sum()) / total if total > 0 else (width - 1) / 2
    # Whole-pixel shift as in MNIST; clipped so a lopsided digit is never pushed off the field.
    top = min(max(round(CENTRE - centre_row), 0), SIDE - height)
    left = min(max(round(CENTRE - centre_col), 0), SIDE - width)
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return field
