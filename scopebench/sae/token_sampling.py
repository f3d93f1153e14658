"""The paper's token sampling: each epoch, ``tokens_per_image`` distinct random patches per image.

The stream of ``(image, patch)`` pairs is a pure function of ``(seed, epoch)``, so any
training step's batch can be regenerated after a restart.
"""
from __future__ import annotations

import numpy as np


class PatchTokenSampler:
    def __init__(self, n_images: int, n_patches: int, tokens_per_image: int, seed: int) -> None:
        if tokens_per_image > n_patches:
            raise ValueError(f"tokens_per_image={tokens_per_image} exceeds the {n_patches} patches per image")
        self.n_images = n_images
        self.n_patches = n_patches
        self.tokens_per_image = tokens_per_image
        self.seed = seed
        self._cached_epoch: tuple[int, np.ndarray] | None = None

    @property
    def tokens_per_epoch(self) -> int:
        return self.n_images * self.tokens_per_image

    def epoch_pairs(self, epoch: int) -> np.ndarray:
        """``[tokens_per_epoch]`` flat indices ``image * n_patches + patch`` in training order."""
        if self._cached_epoch is not None and self._cached_epoch[0] == epoch:
            return self._cached_epoch[1]
        rng = np.random.default_rng([self.seed, epoch])
        patches = rng.integers(0, self.n_patches, size=(self.n_images, self.tokens_per_image))
        while True:  # redraw rows holding a repeated patch until all rows are distinct
            ordered = np.sort(patches, axis=1)
            repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            if not repeated.any():
                break
            patches[repeated] = rng.integers(0, self.n_patches, size=(int(repeated.sum()), self.tokens_per_image))
        flat = (np.arange(self.n_images)[:, None] * self.n_patches + patches).reshape(-1)
        flat = flat[rng.permutation(flat.size)]
        self._cached_epoch = (epoch, flat)
        return flat

    def batch(self, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image_idx, patch_idx)`` of training step ``step``, sorted for sequential reads."""
        start, stop = step * batch_size, (step + 1) * batch_size
        parts = []
        while start < stop:
            epoch, offset = divmod(start, self.tokens_per_epoch)
            take = min(stop - start, self.tokens_per_epoch - offset)
            parts.append(self.epoch_pairs(epoch)[offset : offset + take])
            start += take
        flat = np.sort(np.concatenate(parts))
        return flat // self.n_patches, flat % self.n_patches
