import os
from pathlib import Path

import pytest
import torch

# two threads (CI's cores), or OMP_NUM_THREADS when it is set (a test run beside other work)
_threads = os.environ.get("OMP_NUM_THREADS", "")
torch.set_num_threads(max(1, int(_threads)) if _threads.isdecimal() else min(2, os.cpu_count() or 1))


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


#: The folders of the data folder that the experiments (``alr bench``) read.
DATA_FOLDERS = ("bsd400", "bsd68", "set12", "cbsd432", "cbsd68", "rni15")


def _missing_data() -> list[str]:
    p = os.environ.get("ALR_DATA")
    return [d for d in DATA_FOLDERS if not p or not (Path(p) / d).is_dir()]


def data_dir() -> Path | None:
    """The data folder ``$ALR_DATA`` if it holds every folder of :data:`DATA_FOLDERS`, else None."""
    return None if _missing_data() else Path(os.environ["ALR_DATA"])


def no_data_reason() -> str:
    """Why :func:`data_dir` is None: the path tried and what the folder must hold."""
    p = os.environ.get("ALR_DATA")
    need = "set ALR_DATA to a folder holding " + ", ".join(f"{d}/" for d in DATA_FOLDERS)
    if not p:
        return f"ALR_DATA is not set: {need}"
    if not Path(p).is_dir():
        return f"ALR_DATA={p} does not exist: {need}"
    return f"ALR_DATA={p} has no {', '.join(f'{d}/' for d in _missing_data())}: {need}"


def interrupted(sample, calls: int):
    """``sample`` that raises KeyboardInterrupt on its ``calls + 1``-th call."""
    count = [0]

    def wrapped(*args):
        count[0] += 1
        if count[0] > calls:
            raise KeyboardInterrupt
        return sample(*args)
    return wrapped
