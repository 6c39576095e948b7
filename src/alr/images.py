"""Reading and writing image files as float tensors in [0, 1].

Supported: PNG, JPEG, TIFF (8/16-bit integer, 32-bit float) and ``.npy``
float arrays shaped (H, W) or (H, W, C). Integer images are scaled by their
type's maximum; float files are taken as they are (not clipped), so noisy
inputs keep their exact values. Images are returned as (1, C, H, W) tensors.
Writes are atomic: a failed write never leaves a partial file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend (figures are only saved to files)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
FLOAT_EXTENSIONS = (".npy", ".tif", ".tiff")


def _to_float(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / np.iinfo(arr.dtype).max
    return arr.astype(np.float32)


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into a float32 (H, W) or (H, W, C) array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    ext = path.suffix.lower()
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext in (".tif", ".tiff"):
            import tifffile
            arr = tifffile.imread(path)
        else:
            from PIL import Image
            with Image.open(path) as im:
                if im.mode in ("P", "PA", "CMYK", "YCbCr", "LA", "1"):
                    im = im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB")
                arr = np.array(im)
    except Exception as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channel-first TIFF
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"{path}: unsupported image shape {arr.shape}")
    arr = _to_float(arr)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # RGBA -> RGB (alpha dropped)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: image contains NaN or infinite values")
    return arr


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


def read_image(path: str | os.PathLike, channels: int | None = None) -> torch.Tensor:
    """Read an image as a (1, C, H, W) float32 tensor; optionally convert to ``channels``."""
    arr = read_array(path)
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None].contiguous()
    return x if channels is None else to_channels(x, channels)


def write_image(path: str | os.PathLike, x: torch.Tensor, bits: int = 8) -> None:
    """Write a (1, C, H, W) or (C, H, W) tensor, atomically.

    ``.npy`` and ``.tif`` get unclipped float32 data; PNG/JPEG get values
    clipped to [0, 1] and quantised to ``bits`` (8, or 16 for PNG).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"unsupported output format {ext!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
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
            else:
                im = Image.fromarray(np.round(c * 255).astype(np.uint8))
                im.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))

    atomic_write(path, write)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Sorted image files of a folder (non-recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The data folder (holding bsd400/, bsd68/, ...): ``path``, else ``$ALR_DATA``."""
    if path is None:
        path = os.environ.get("ALR_DATA")
    if not path:
        raise FileNotFoundError("no data folder given: pass --data DIR or set ALR_DATA")
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"data folder {p} not found; pass --data DIR or set ALR_DATA")
    return p


def figure_panels(path: str | os.PathLike, panels: list[tuple[str, torch.Tensor]]) -> None:
    """Save the images ``panels`` ((title, (1, C, H, W) tensor) pairs) side by side as one figure."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
    for ax, (title, img) in zip(axes, panels):
        im = img[0].clamp(0, 1).permute(1, 2, 0).numpy()
        ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
