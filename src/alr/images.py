"""Reading and writing image files as float tensors in [0, 1], and the one check of image data.

Supported: PNG, JPEG, BMP, TIFF and ``.npy`` arrays shaped (H, W), (H, W, C) or (C, H, W) with
C = 1, 3 or 4 (an alpha channel is dropped). Images are returned as (1, C, H, W) float32
tensors. Every array, from a file or given to the Python API, goes through one rule
(:func:`as_image` for arrays, :func:`check_image` for tensors):

* ``bool``: 0 / 1. ``uint8``: divided by 255; ``uint16``: by 65535 (the types of image
  files, whose range they state);
* other integer types (``int8`` ... ``int64``, ``uint32``, ``uint64``, as ``.npy`` or TIFF
  hold them): divided by 255 when every value lies in [0, 255], by 65535 when in [0, 65535];
  negative or larger values are refused (no scale can be guessed);
* floats are taken as they are, unclipped, so noisy inputs keep their exact values; they must
  be finite and lie in [-FLOAT_SLACK, 1 + FLOAT_SLACK] (data in 0-255 is refused: divide it
  by 255);
* complex, structured and object arrays are refused, and so is an image without pixels or
  declaring more than :data:`MAX_VALUES` values (checked before decoding the file).

A refused file or array raises :class:`ImageError` naming it. Writes are atomic
(:func:`alr.files.atomic_write`): a failed write never leaves a partial file.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .errors import AlrError
from .files import PathLike, atomic_write, check_output


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend (figures are only saved to files)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
FLOAT_EXTENSIONS = (".npy", ".tif", ".tiff")
#: Most values (pixels x channels) an image may hold or a file declare (1 GiB as float32).
MAX_VALUES = 1 << 28
#: Float images are [0, 1] up to noise: values outside [-FLOAT_SLACK, 1 + FLOAT_SLACK] are refused.
FLOAT_SLACK = 4.0


class ImageError(AlrError, ValueError):
    """An image file or array that alr cannot take, with the reason and its name."""


def _integer_scale(arr: np.ndarray, name: str) -> int:
    """The value that maps an integer image to [0, 1] (module docstring)."""
    if arr.dtype in (np.uint8, np.uint16):
        return int(np.iinfo(arr.dtype).max)
    lo, hi = int(arr.min()), int(arr.max())
    for top in (255, 65535):
        if 0 <= lo and hi <= top:
            return top
    raise ImageError(f"{name}: {arr.dtype} values in [{lo}, {hi}] fit neither 8-bit [0, 255] nor 16-bit "
                     "[0, 65535] data; save the image as floats in [0, 1]")


def check_values(x: torch.Tensor, name: str, bounded: bool = True) -> torch.Tensor:
    """``x`` (float) itself if it has pixels, is finite and (``bounded``) lies in [0, 1] up to
    noise (:data:`FLOAT_SLACK`); :class:`ImageError` naming ``name`` otherwise."""
    if x.numel() == 0:
        raise ImageError(f"{name}: the image has no pixels (shape {tuple(x.shape)})")
    each = x[0].numel() if x.dim() == 4 else x.numel()  # the limit is per image, not per batch
    if each > MAX_VALUES:
        raise ImageError(f"{name}: {each:,} values in one image is more than alr takes ({MAX_VALUES:,})")
    if not bool(torch.isfinite(x).all()):
        raise ImageError(f"{name}: the image contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if bounded and (lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK):
        hint = "; it looks like 0-255 data: divide it by 255" if hi > 1 + FLOAT_SLACK and lo > -FLOAT_SLACK else ""
        raise ImageError(f"{name}: float values in [{lo:.4g}, {hi:.4g}]; alr takes images in [0, 1] (up to "
                         f"noise, at most [{-FLOAT_SLACK:g}, {1 + FLOAT_SLACK:g}]){hint}")
    return x


def as_image(arr: np.ndarray, name: str = "the image", bounded: bool = True) -> np.ndarray:
    """The float32 (H, W) or (H, W, C) image of an array, by the module's rule; :class:`ImageError`
    naming ``name`` for an array that is no image (``bounded=False``: floats of any finite scale,
    for a blur kernel).

    >>> as_image(np.array([[0, 51], [204, 255]], dtype=np.int64)).tolist()
    [[0.0, 0.20000000298023224], [0.800000011920929, 1.0]]
    >>> as_image(np.full((2, 2), 200.0), "a.npy")
    Traceback (most recent call last):
    ...
    alr.images.ImageError: a.npy: float values in [200, 200]; alr takes images in [0, 1] ...: divide it by 255
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channel-first (TIFF, .npy)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise ImageError(f"{name}: unsupported image shape {arr.shape}; expected (H, W), (H, W, C) or (C, H, W) "
                         "with C = 1, 3 or 4")
    if arr.size == 0:
        raise ImageError(f"{name}: the image has no pixels (shape {arr.shape})")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / _integer_scale(arr, name)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    else:
        raise ImageError(f"{name}: {arr.dtype} data is not an image (expected integers, bool or real floats)")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # RGBA -> RGB (alpha dropped)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    check_values(torch.from_numpy(arr), name, bounded)
    return arr


def check_image(x, name: str = "y", bounded: bool = True) -> torch.Tensor:
    """``x`` itself if it is a float (B, C, H, W) image tensor that :func:`check_values` accepts
    (``bounded=False``: any finite scale, for the measurements of an operator whose values are
    not pixels); :class:`ImageError` naming ``name`` otherwise (integer tensors are refused, not
    rescaled)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ImageError(f"{name} must be a (B, C, H, W) tensor, got {type(x).__name__}"
                         + (f" of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else ""))
    if not x.is_floating_point():
        raise ImageError(f"{name} must be a float tensor with values in [0, 1], got {x.dtype}"
                         + (" (divide by 255 for 8-bit data)" if x.dtype == torch.uint8 else ""))
    return check_values(x, name, bounded)


def _declared_values(path: Path, ext: str) -> int:
    """The values (pixels x channels) a file declares, read from its header without decoding."""
    if ext == ".npy":
        from numpy.lib import format as npy
        with open(path, "rb") as f:
            version = npy.read_magic(f)
            shape, _, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(f)
            data = os.fstat(f.fileno()).st_size - f.tell()
        n = math.prod(shape)
        if not dtype.hasobject and n * dtype.itemsize > data:
            raise ValueError(f"truncated: the header declares {n * dtype.itemsize:,} bytes of data, "
                             f"the file holds {data:,}")
        return n
    if ext in (".tif", ".tiff"):
        import tifffile
        with tifffile.TiffFile(path) as t:
            return math.prod(t.series[0].shape)
    from PIL import Image
    with Image.open(path) as im:
        return im.size[0] * im.size[1] * len(im.getbands())


def read_array(path: PathLike, bounded: bool = True) -> np.ndarray:
    """Read an image file into a float32 (H, W) or (H, W, C) array (:func:`as_image`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    ext = path.suffix.lower()
    try:
        declared = _declared_values(path, ext)
        if declared > MAX_VALUES:
            raise ImageError(f"{path}: declares {declared:,} values, more than alr reads ({MAX_VALUES:,})")
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext in (".tif", ".tiff"):
            import tifffile
            arr = tifffile.imread(path)
        else:
            arr = _read_pillow(path)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 -- whatever a corrupt file makes a decoder raise
        raise ImageError(f"cannot read image {path}: {e}") from None
    return as_image(arr, str(path), bounded)


#: Pillow reads a 16-bit colour PNG at 8 bits (the high byte of each big-endian sample); read with
#: the little-endian unpacker of the same layout, the same data gives the low bytes.
_PNG16_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


def _png16_color(im) -> str | None:
    """The unpacker giving the low bytes of ``im``, if it is a 16-bit colour PNG, else None."""
    if im.format != "PNG" or len(im.tile) != 1 or not isinstance(im.tile[0].args, str):
        return None
    return _PNG16_LOW_BYTES.get(im.tile[0].args)


def _read_pillow(path: Path) -> np.ndarray:
    """The pixels of a PNG, JPEG or BMP file as a viewer shows them (EXIF orientation applied), gray
    kept gray; 16-bit colour PNGs as uint16 (Pillow alone would keep 8 of the 16 bits)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        low = _png16_color(im)
        high = ImageOps.exif_transpose(im)  # as viewers show it (a camera's orientation tag)
        if high.mode in ("LA", "1"):  # gray stays gray (alpha dropped)
            high = high.convert("L")
        elif high.mode in ("P", "PA", "CMYK", "YCbCr"):
            high = high.convert("RGBA" if "A" in high.mode or high.mode == "P" else "RGB")
        arr = np.array(high)
    if low is None:
        return arr
    with Image.open(path) as im:
        im.tile = [t._replace(args=low) for t in im.tile]
        lo = np.array(ImageOps.exif_transpose(im))
    return (arr.astype(np.uint16) << 8) | lo


def _png16(path: str, arr: np.ndarray) -> None:
    """Write an (H, W, 3) uint16 array as a 16-bit RGB PNG (Pillow writes 16 bits for gray only):
    big-endian samples, rows unfiltered, one zlib stream."""
    import struct
    import zlib

    h, w, c = arr.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), arr.astype(">u2").reshape(h, w * c).view(np.uint8)], 1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


def bit_depth(path: PathLike) -> int:
    """16 for a 16-bit integer image file (PNG or TIFF), else 8: the depth an output keeps."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in (".tif", ".tiff"):
        import tifffile
        with tifffile.TiffFile(path) as t:
            return 16 if t.series[0].dtype in (np.uint16, np.int16) else 8
    if ext == ".png":
        from PIL import Image
        with Image.open(path) as im:
            return 16 if im.mode.startswith("I") or _png16_color(im) else 8
    return 8


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a (B, C, H, W) image to 1 (ITU-R 601 luma) or 3 (replicated gray) channels."""
    if x.shape[1] == channels:
        return x
    if channels == 1 and x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
        return (x * w[None, :, None, None]).sum(1, keepdim=True)
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"cannot convert {x.shape[1]} channels to {channels}")


#: Rows of the opponent colour transform of :func:`to_opponent`: luminance and two chroma
#: channels, mutually orthogonal, each scaled so that it maps [0, 1]^3 into [0, 1] (with the offsets
#: :data:`OPPONENT_OFFSET`).
OPPONENT = ((1 / 3, 1 / 3, 1 / 3), (1 / 2, 0.0, -1 / 2), (1 / 4, -1 / 2, 1 / 4))
OPPONENT_OFFSET = (0.0, 0.5, 0.5)


def opponent_noise(sigma: float) -> tuple[float, float, float]:
    """Noise std of each :func:`to_opponent` channel of an RGB image with white noise of std sigma."""
    return tuple(sigma * sum(w * w for w in row) ** 0.5 for row in OPPONENT)


def to_opponent(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB to luminance (R+G+B)/3 and chroma (R-B)/2 + 1/2, (R-2G+B)/4 + 1/2.

    The rows are orthogonal, so white noise stays white and independent between the channels
    (std :func:`opponent_noise`); an image in [0, 1] stays in [0, 1]. Inverse: :func:`from_opponent`.

    >>> x = torch.rand(2, 3, 8, 8)
    >>> bool(torch.allclose(from_opponent(to_opponent(x)), x, atol=1e-6))
    True
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) colour image, got shape {tuple(x.shape)}")
    m = torch.tensor(OPPONENT, dtype=x.dtype, device=x.device)
    b = torch.tensor(OPPONENT_OFFSET, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,bjhw->bihw", m, x) + b[None, :, None, None]


def from_opponent(z: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_opponent`."""
    m = torch.tensor(OPPONENT, dtype=z.dtype, device=z.device)
    b = torch.tensor(OPPONENT_OFFSET, dtype=z.dtype, device=z.device)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), z - b[None, :, None, None])


def read_image(path: PathLike, channels: int | None = None, bounded: bool = True) -> torch.Tensor:
    """Read an image as a (1, C, H, W) float32 tensor; optionally convert to ``channels``
    (``bounded=False``: float data of any finite scale, :func:`as_image`)."""
    arr = read_array(path, bounded)
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None].contiguous()
    return x if channels is None else to_channels(x, channels)


def image_output(path: PathLike, inputs=(), folders=(), option: str = "-o") -> Path:
    """``path`` checked as an image file to write: a supported format, and the output policy of
    :func:`alr.files.check_output` (never an input, never a folder); :class:`AlrError` otherwise."""
    path = check_output(path, inputs, folders, option)
    _image_format(path, option)
    return path


def _image_format(path: Path, option: str = "") -> str:
    """The extension of an image file to write, if alr writes that format."""
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ImageError(f"{option + ' ' if option else ''}{path}: unsupported output format {ext!r}; use one of "
                         f"{', '.join(IMAGE_EXTENSIONS)}")
    return ext


def write_image(path: PathLike, x: torch.Tensor, bits: int = 8) -> None:
    """Write a (1, C, H, W) or (C, H, W) tensor, atomically.

    ``.npy`` and ``.tif`` get unclipped float32 data; PNG/JPEG get values
    clipped to [0, 1] and quantised to ``bits`` (8, or 16 for PNG, gray or colour).
    """
    path = Path(path)
    ext = _image_format(path)
    x = x.detach().float().cpu()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError("write_image takes one image")
        x = x[0]
    arr = x.permute(1, 2, 0).numpy()
    if arr.shape[-1] == 1:
        arr = arr[..., 0]

    def write(tmp: str) -> None:
        if ext == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, arr.astype(np.float32))
        elif ext in (".tif", ".tiff"):
            import tifffile
            tifffile.imwrite(tmp, arr.astype(np.float32))
        else:
            from PIL import Image
            fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[ext]
            c = np.clip(arr, 0, 1)
            if bits == 16 and fmt == "PNG" and c.ndim == 2:
                Image.fromarray(np.round(c * 65535).astype(np.uint16)).save(tmp, format=fmt)
            elif bits == 16 and fmt == "PNG":
                _png16(tmp, np.round(c * 65535).astype(np.uint16))
            else:
                im = Image.fromarray(np.round(c * 255).astype(np.uint8))
                im.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))

    atomic_write(path, write)


def list_images(folder: PathLike) -> list[Path]:
    """Sorted image files of a folder (non-recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


def data_root(path: PathLike | None = None) -> Path:
    """The data folder (holding bsd400/, bsd68/, ...): ``path``, else ``$ALR_DATA``."""
    if path is None:
        path = os.environ.get("ALR_DATA")
    if not path:
        raise FileNotFoundError("no data folder given: pass --data DIR or set ALR_DATA")
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"data folder {p} not found; pass --data DIR or set ALR_DATA")
    return p


def figure_panels(path: PathLike, panels: list[tuple[str, torch.Tensor]]) -> None:
    """Save the images ``panels`` ((title, (1, C, H, W) tensor) pairs) side by side as one figure."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
    for ax, (title, img) in zip(axes, panels):
        im = img[0].clamp(0, 1).permute(1, 2, 0).numpy()
        ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip(".") or "png"))
    plt.close(fig)
