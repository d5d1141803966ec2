"""Small data sets for the lectures. Nothing is downloaded: every set ships with a
package (scikit-learn's digits) or is generated here from a fixed seed."""
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Split:
    """A train/test split of images or features `x` with integer labels `y`."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def __repr__(self) -> str:
        return (f"Split(train: x {tuple(self.x_train.shape)}, y {tuple(self.y_train.shape)}; "
                f"test: x {tuple(self.x_test.shape)}, y {tuple(self.y_test.shape)})")


def load_digits(test_fraction: float = 0.25, seed: int = 0, flatten: bool = False) -> Split:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), scaled to [0, 1].

    Returns float32 images of shape (N, 1, 8, 8) (or (N, 64) with flatten=True) and int64
    labels, split into train and test by a seeded, class-stratified shuffle.
    The data ships inside scikit-learn: no download.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    digits = _sk_load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.int64)
    if flatten:
        x = x.flatten(1)
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in range(10):  # stratified: the same share of every digit in the test set
        idx = np.flatnonzero(digits.target == label)
        rng.shuffle(idx)
        test_idx.extend(idx[: round(len(idx) * test_fraction)])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_idx] = True
    return Split(x[~is_test], y[~is_test], x[is_test], y[is_test])
