"""Clean / degraded patch sources for training the critic (unpaired, or paired for the study's recipe).

A :class:`ImageStack` holds a set of images (uint8/float, any sizes) padded
into one tensor so that random ``s x s`` patches are drawn in a single
vectorised gather. Two disjoint stacks feed the trainer: clean patches
``p ~ P_c`` and degraded patches ``q ~ P_d``, where ``P_d`` is one of

* Gaussian noise of fixed ``sigma``: ``q = p' + sigma * n``;
* noise level drawn per patch, ``sigma ~ U[a, b]``;
* an optional Gaussian blur before the noise (``q = k * p' + sigma n``);
* optional Poisson noise of gain ``g`` before the Gaussian noise (Poisson-Gaussian,
  ``q = g P(k * p' / g) + sigma n``);
* any other forward model with its noise, as an object with the same three members as
  :class:`Degradation` (``margin``, a call, ``describe``), such as
  :class:`alr.integrations.deepinv.PhysicsDegradation` for a DeepInverse physics;
* patches of real degraded images whose degradation is unknown.

``p`` and ``p'`` come from different images (:func:`split_unpaired`), so the
critic never sees a clean/degraded pair of the same content; ``paired=True`` makes
``p' = p`` instead (:class:`PatchPairs`). The last images of a folder may be held out
of training to validate it (:func:`split_holdout`). All sampling uses a
``torch.Generator``: a seed fixes the whole stream.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .critic import DIHEDRAL, dihedral
from .images import list_images, read_image
from .physics import gaussian_kernel


class ImageStack:
    """Images padded into one (N, C, Hmax, Wmax) tensor, with their true sizes.

    Integer images are kept as uint8 to save memory and converted per batch.
    """

    def __init__(self, images: list[torch.Tensor]) -> None:
        if not images:
            raise ValueError("no images given")
        c = images[0].shape[0]
        if any(im.shape[0] != c for im in images):
            raise ValueError("all images must have the same number of channels")
        hmax = max(im.shape[1] for im in images)
        wmax = max(im.shape[2] for im in images)
        dtype = images[0].dtype if all(im.dtype == images[0].dtype for im in images) else torch.float32
        self.data = torch.zeros(len(images), c, hmax, wmax, dtype=dtype)
        for i, im in enumerate(images):
            if im.dtype == torch.uint8 and dtype != torch.uint8:  # among float images: to [0, 1] as they are
                im = im.float() / 255
            self.data[i, :, : im.shape[1], : im.shape[2]] = im.to(dtype)
        self.sizes = torch.tensor([[im.shape[1], im.shape[2]] for im in images])

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def channels(self) -> int:
        """Channels of the images (1 or 3)."""
        return self.data.shape[1]

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, channels: int, files: list[Path] | None = None,
                    max_images: int | None = None) -> "ImageStack":
        """Read every image of ``folder`` (or the given ``files``) with ``channels`` channels."""
        files = files if files is not None else list_images(folder)
        if max_images:
            files = files[:max_images]
        return cls([_load_uint8(f, channels) for f in files])

    def subset(self, idx: list[int] | torch.Tensor) -> "ImageStack":
        """The images ``idx`` as a new stack."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        out = ImageStack.__new__(ImageStack)
        out.data, out.sizes = self.data[idx], self.sizes[idx]
        return out

    def sample(self, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random ``size x size`` patches as float32 (n, C, size, size) in [0, 1]."""
        if (self.sizes < size).any():
            small = int((self.sizes.min(1).values < size).sum())
            raise ValueError(f"{small} image(s) are smaller than the {size}x{size} patch size")
        img = torch.randint(len(self), (n,), generator=generator)
        hw = self.sizes[img]
        u = torch.rand(n, 2, generator=generator)
        top = (u[:, 0] * (hw[:, 0] - size + 1)).long()
        left = (u[:, 1] * (hw[:, 1] - size + 1)).long()
        ar = torch.arange(size)
        rows = (top[:, None] + ar)[:, :, None]          # (n, s, 1)
        cols = (left[:, None] + ar)[:, None, :]         # (n, 1, s)
        patches = self.data.permute(0, 2, 3, 1)[img[:, None, None], rows, cols]  # (n, s, s, C)
        patches = patches.permute(0, 3, 1, 2).float()
        if self.data.dtype == torch.uint8:
            patches = patches / 255.0
        return patches.contiguous()


def _load_uint8(path: Path, channels: int) -> torch.Tensor:
    x = read_image(path, channels)[0]
    # 8-bit sources lose nothing as uint8; keep float for 16-bit/float files.
    q = torch.round(x * 255)
    return q.to(torch.uint8) if torch.allclose(q / 255, x, atol=1e-6) else x


def split_unpaired(n: int, seed: int = 0, fraction: float = 0.5) -> tuple[list[int], list[int]]:
    """Split image indices 0..n-1 into two disjoint random sets (clean, degraded)."""
    if n < 2:
        raise ValueError("need at least 2 images to make unpaired clean/degraded sets")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = min(max(1, round(n * fraction)), n - 1)
    return sorted(perm[:k]), sorted(perm[k:])


@dataclass
class Degradation:
    """Synthetic degradation of patches: optional Gaussian blur, optional Poisson noise, then
    Gaussian noise.

    ``sigma_min == sigma_max`` gives a fixed noise level, otherwise each patch
    gets ``sigma ~ U[sigma_min, sigma_max]``. ``gain`` g > 0 adds Poisson noise first,
    ``g P(z / g)`` of the (blurred) patch z clipped at 0, of variance g z: the Poisson-Gaussian model
    of DeepInverse's ``PoissonGaussianNoise(gain, sigma)``. Noise is not clipped.

    >>> import torch
    >>> deg = Degradation(0.02, 0.02, gain=0.05)
    >>> q = deg(torch.full((2000, 1, 5, 5), 0.5), torch.Generator().manual_seed(0))
    >>> round(float(q.var()), 3)  # g * 0.5 + sigma^2
    0.025
    >>> deg.describe()
    'poisson noise gain 0.05 + gaussian noise sigma=0.02'
    """

    sigma_min: float
    sigma_max: float
    blur_sigma: float = 0.0
    gain: float = 0.0

    def __post_init__(self) -> None:
        if self.sigma_min < 0 or self.sigma_max < self.sigma_min:
            raise ValueError(f"invalid noise range [{self.sigma_min}, {self.sigma_max}]")
        if self.blur_sigma < 0:
            raise ValueError("blur sigma must be >= 0")
        if self.gain < 0:
            raise ValueError("Poisson gain must be >= 0")

    @property
    def margin(self) -> int:
        """Extra pixels on each side needed so the blur of a patch is exact."""
        return gaussian_kernel(self.blur_sigma).shape[0] // 2 if self.blur_sigma > 0 else 0

    def __call__(self, patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Degrade patches of size ``s + 2 * margin``; returns ``s x s`` patches."""
        x = patches
        if self.blur_sigma > 0:
            k = gaussian_kernel(self.blur_sigma).to(x)
            c = x.shape[1]
            x = F.conv2d(x, k.flip(0, 1)[None, None].expand(c, 1, *k.shape), groups=c)
        if self.gain > 0:
            x = self.gain * torch.poisson(x.clamp_min(0) / self.gain, generator=generator)
        n = x.shape[0]
        sig = self.sigma_min + (self.sigma_max - self.sigma_min) * torch.rand(n, 1, 1, 1, generator=generator)
        return x + sig * torch.randn(x.shape, generator=generator)

    def describe(self) -> str:
        """One line naming the degradation, for the model's metadata."""
        s = (f"gaussian noise sigma={self.sigma_min:g}" if self.sigma_min == self.sigma_max
             else f"gaussian noise sigma~U[{self.sigma_min:g}, {self.sigma_max:g}]")
        return ((f"gaussian blur std {self.blur_sigma:g} + " if self.blur_sigma else "")
                + (f"poisson noise gain {self.gain:g} + " if self.gain else "") + s)


class PatchPairs:
    """Stream of unpaired (clean, degraded) patch batches for the critic.

    Parameters
    ----------
    clean : stack of clean images (patches ``p``).
    degraded_source : stack that degraded patches come from: clean images of a
        disjoint set when ``degradation`` is given, else real degraded images.
    degradation : synthetic degradation (a :class:`Degradation` or an object with its ``margin``,
        call and ``describe``), or None for real degraded images.
    size : patch side (the critic's receptive field).
    augment : turn each patch by one of the 8 flips / quarter turns drawn at random
        (:func:`random_dihedral`), so the critic sees 8 times the patch variety.
    paired : each degraded patch is the degradation of the clean patch beside it (synthetic
        degradations only; ``degraded_source`` is then unused). The distributions are the same
        as unpaired ones; the pairing is what the slope penalty of :func:`alr.train.wgan_gp_loss`
        needs.
    """

    def __init__(self, clean: ImageStack, degraded_source: ImageStack, size: int,
                 degradation: Degradation | None = None, augment: bool = False, paired: bool = False) -> None:
        if clean.channels != degraded_source.channels:
            raise ValueError("clean and degraded images must have the same channel count")
        if paired and degradation is None:
            raise ValueError("paired patches need a synthetic degradation, not real degraded images")
        self.clean, self.source, self.size, self.degradation = clean, degraded_source, size, degradation
        self.augment, self.paired = augment, paired

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: (clean patches, degraded patches), each (n, C, s, s)."""
        if self.paired:
            m, s = self.degradation.margin, self.size
            big = self.clean.sample(n, s + 2 * m, generator)
            p, q = big[..., m:m + s, m:m + s], self.degradation(big, generator)
            if self.augment:  # the same turn for both patches of a pair
                pq = random_dihedral(torch.cat([p, q], 1), generator)
                p, q = pq[:, :p.shape[1]], pq[:, p.shape[1]:]
            return p, q
        p = self.clean.sample(n, self.size, generator)
        if self.degradation is None:
            q = self.source.sample(n, self.size, generator)
        else:
            m = self.degradation.margin
            q = self.degradation(self.source.sample(n, self.size + 2 * m, generator), generator)
        if self.augment:
            p, q = random_dihedral(p, generator), random_dihedral(q, generator)
        return p, q

    def describe(self) -> dict:
        """The data of the pairs (image counts, degradation, patch size), for the model's metadata."""
        return {"clean_images": len(self.clean), "degraded_images": len(self.source),
                "degradation": self.degradation.describe() if self.degradation else "real degraded images",
                "patch_size": self.size, **({"augment": "random flips / quarter turns"} if self.augment else {}),
                **({"paired": "each degraded patch is its clean patch degraded"} if self.paired else {})}


def random_dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each square patch of ``x`` (n, C, s, s) turned by one of the 8 flips / quarter turns
    (:func:`alr.critic.dihedral`), drawn uniformly and independently."""
    k = torch.randint(DIHEDRAL, (x.shape[0],), generator=generator)
    out = torch.empty_like(x)
    for j in range(DIHEDRAL):
        idx = (k == j).nonzero().flatten()
        out[idx] = dihedral(x[idx], j)
    return out


def split_holdout(clean_dir: str | os.PathLike, max_images: int | None = None,
                  holdout: int = 0) -> tuple[list[Path], list[Path]]:
    """The images of ``clean_dir`` (its first ``max_images``) that train, and its last ``holdout``,
    held out to validate the training (:class:`alr.calibration.Validator`)."""
    if holdout < 0:
        raise ValueError(f"holdout must be >= 0, got {holdout}")
    files = list_images(clean_dir)[: max_images or None]
    if holdout and holdout > len(files) - 2:
        raise ValueError(f"cannot hold {holdout} of the {len(files)} images of {clean_dir} out of training "
                         "(at least 2 must train)")
    return (files[:-holdout], files[-holdout:]) if holdout else (files, [])


def make_patch_pairs(clean_dir: str | os.PathLike, size: int, channels: int,
                     degraded_dir: str | os.PathLike | None = None,
                     degradation: Degradation | None = None, seed: int = 0,
                     max_images: int | None = None, augment: bool = False, paired: bool = False,
                     holdout: int = 0) -> PatchPairs:
    """Build the unpaired patch stream from folders.

    With ``degraded_dir`` its images are the degraded source and all of
    ``clean_dir`` is clean. Otherwise ``clean_dir`` is split in two disjoint
    halves: one stays clean, the other is degraded by ``degradation``; with
    ``paired`` there is no split: every patch of ``clean_dir`` gives a clean patch
    and its own degraded version (:class:`PatchPairs`).
    ``augment``: random flips / quarter turns of the patches (:class:`PatchPairs`).
    ``holdout``: the last images of ``clean_dir`` are not trained on (:func:`split_holdout`), nor
    the images of ``degraded_dir`` of the same names (their degraded versions: a degraded folder
    holding versions of the clean scenes must name them as the clean images, or they are trained on).
    """
    if (degraded_dir is None) == (degradation is None):
        raise ValueError("give exactly one of a degraded folder or a synthetic degradation")
    files, held = split_holdout(clean_dir, max_images, holdout)
    if degraded_dir is not None:
        held_out = {f.stem for f in held}
        degraded = [f for f in list_images(degraded_dir)[: max_images or None] if f.stem not in held_out]
        return PatchPairs(ImageStack.from_folder(clean_dir, channels, files),
                          ImageStack.from_folder(degraded_dir, channels, degraded), size,
                          augment=augment, paired=paired)
    stack = ImageStack.from_folder(clean_dir, channels, files)
    if paired:
        return PatchPairs(stack, stack, size, degradation, augment, paired=True)
    ci, di = split_unpaired(len(stack), seed)
    return PatchPairs(stack.subset(ci), stack.subset(di), size, degradation, augment)


def add_noise(x: torch.Tensor, sigma: float, seed: int | None = None, clip: bool = False) -> torch.Tensor:
    """y = x + sigma * n, n ~ N(0, I), seeded; ``clip`` clips y to [0, 1] (the paper's protocol)."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    y = x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    return y.clamp(0, 1) if clip else y


def estimate_sigma(y: torch.Tensor) -> float:
    """Robust noise std of a (1, C, H, W) image: median absolute deviation of the
    finest diagonal wavelet coefficients / 0.6745 (Donoho & Johnstone 1994),
    averaged over channels (``skimage.restoration.estimate_sigma``)."""
    from skimage.restoration import estimate_sigma as _est

    if y.dim() != 4 or y.shape[0] != 1:
        raise ValueError(f"estimate_sigma takes one image (1, C, H, W), got shape {tuple(y.shape)}")
    if bool((y == y.flatten()[0]).all()):  # a constant image: no noise at all
        return 0.0
    arr = y[0].detach().cpu().double().numpy()
    return float(np.mean([_est(arr[c]) for c in range(arr.shape[0])]))
