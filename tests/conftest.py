import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def camera() -> torch.Tensor:
    """scikit-image's bundled 'camera' image, (1, 1, 512, 512) in [0, 1]."""
    from skimage import data
    return torch.from_numpy(data.camera()).float()[None, None] / 255


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """A folder of natural gray images cut from scikit-image's bundled samples."""
    from PIL import Image
    from skimage import color, data
    d = tmp_path_factory.mktemp("samples")
    imgs = [data.camera(), data.moon(), (color.rgb2gray(data.astronaut()) * 255).astype("uint8"),
            (color.rgb2gray(data.coffee()) * 255).astype("uint8"), data.text(), data.brick(), data.grass(),
            data.gravel()]
    k = 0
    for im in imgs:
        h, w = im.shape
        for i in range(0, h - 127, 128):
            for j in range(0, w - 127, 128):
                Image.fromarray(im[i:i + 128, j:j + 128]).save(d / f"p{k:03d}.png")
                k += 1
    return d


def data_dir() -> Path | None:
    p = os.environ.get("ALR_DATA")
    return Path(p) if p and (Path(p) / "bsd68").is_dir() else None
