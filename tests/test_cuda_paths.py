"""The CUDA paths: extraction, SAE training and probes on a CUDA device against the CPU.

Skipped without CUDA; ``scripts/gpu-check.sh`` runs them on a GPU machine.  Its ``--dry-run``
sets ``SCOPEBENCH_CHECK_DEVICE=cpu``, which makes the device under test the CPU, so every line
of these tests except the transfer runs in ``make test`` (the comparisons are then trivially
met; the dry run checks the plumbing, the GPU run the numbers).

Tolerances: TF32 is turned off (the comparison is float32 against float32).  A float32 matrix
product with inner dimension K, in any order, is within gamma_K = K u / (1 - K u) of exact,
normwise (Higham, Lemma 3.5); two evaluations then differ by at most twice that per product.
A tiny ViT up to block ``layer`` chains 2 (layer + 1) such products on the residual stream
(attention and MLP, layer norm in between keeps the scale), so tokens and attention
probabilities agree normwise within 4 (layer + 1) gamma_K with K the widest inner dimension
(the MLP's 4 d).  TF32 (10-bit mantissa) or a wrong kernel misses that by orders of magnitude.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from scopebench.backbones import load_backbone

DEVICE = os.environ.get("SCOPEBENCH_CHECK_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA device (scripts/gpu-check.sh runs these on a GPU machine)"),
]

U32 = 2.0**-24
TINY = dict(image_size=32, patch_size=8, depth=3, embed_dim=64, n_heads=4, layer=1)
FAMILIES = {"clip": "clip-b16", "dinov2": "dinov2-b", "deit3": "deit3-s", "siglip2": "siglip2-b"}


def gamma(k: int) -> float:
    return k * U32 / (1 - k * U32)


@pytest.fixture(autouse=True)
def no_tf32():
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.parametrize("family", list(FAMILIES))
def test_extraction_on_the_device_matches_the_cpu(family: str, tmp_path) -> None:
    from scopebench.data.scenes import SyntheticScenes
    from scopebench.pipeline.cache import ActivationStore
    from scopebench.pipeline.extract import extract_scc_tokens

    name = FAMILIES[family]
    data = SyntheticScenes(3, image_size=TINY["image_size"], seed=5)
    runs = {}
    for device in ("cpu", DEVICE):
        backbone = load_backbone(name, random_init=True, seed=3, overrides=TINY, device=device)
        runs[device] = extract_scc_tokens(backbone, data, ActivationStore(tmp_path / device), 1, batch_size=2,
                                          device=device, attention=True, progress=False)
    bound = 2 * 2 * (TINY["layer"] + 1) * gamma(4 * TINY["embed_dim"])
    for array in ("tokens_a", "tokens_b", "attention_a"):
        expected, actual = (np.asarray(getattr(runs[d], array)[:], np.float64) for d in ("cpu", DEVICE))
        assert actual.shape == expected.shape
        error = np.abs(actual - expected).max() / np.abs(expected).max()
        assert error <= bound, f"{family} {array}: normwise difference {error:.3g} exceeds float32's {bound:.3g}"
    # the bound is tight enough to tell the two views apart
    a, b = np.asarray(runs["cpu"].tokens_a[:]), np.asarray(runs["cpu"].tokens_b[:])
    assert np.abs(a - b).max() / np.abs(a).max() > bound


def _relu_recipe():
    from scopebench.sae.recipe import parse_recipe

    return parse_recipe({"architecture": "relu", "expansion_factor": 4, "lr": 1e-3, "batch_size": 256,
                         "n_tokens": 256 * 30, "lr_warmup_steps": 0, "l1_coeff": 1e-3, "target_l0": None})


def test_sae_training_step_on_the_device_matches_the_cpu() -> None:
    """One ReLU-SAE loss and gradient (no discrete selection, so no tie can flip) on both devices."""
    from scopebench.sae.arch import build_sae

    recipe = _relu_recipe()
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    grads, losses = {}, {}
    for device in ("cpu", DEVICE):
        sae = build_sae(recipe.sae_config(32))
        sae.initialise(torch.Generator().manual_seed(0))
        sae.to(device).train()
        loss, _, _ = sae.training_loss(x.to(device), torch.zeros(sae.d_sae, dtype=torch.bool, device=device))
        loss.backward()
        losses[device] = float(loss.detach())
        grads[device] = sae.W_enc.grad.detach().cpu().double()
    # encoder, decoder and the gradient's outer product: three chained products of inner size <= 256
    bound = 2 * 3 * gamma(256)
    assert abs(losses[DEVICE] - losses["cpu"]) <= bound * abs(losses["cpu"])
    error = (grads[DEVICE] - grads["cpu"]).abs().max() / grads["cpu"].abs().max()
    assert error <= bound, f"W_enc gradient differs by {error:.3g} (normwise), float32 allows {bound:.3g}"


def test_sae_trains_on_the_device() -> None:
    """train_sae on the device: the SAE lands there and reconstructs low-rank tokens far better than at init."""
    from scopebench.sae.training import train_sae

    g = torch.Generator().manual_seed(2)
    basis = torch.linalg.qr(torch.randn(32, 8, generator=g))[0]
    tokens = (torch.randn(400, 4, 8, generator=g) @ basis.T).numpy()
    sae = train_sae(_relu_recipe(), tokens, seed=0, device=DEVICE, progress=False).sae
    assert sae.W_dec.device.type == torch.device(DEVICE).type
    x = torch.from_numpy(tokens.reshape(-1, 32)).to(DEVICE)
    with torch.no_grad():
        fvu = float(((sae(x) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert fvu < 0.2  # the trivial reconstruction (the mean) has FVU 1


def test_probes_train_on_the_device() -> None:
    """Linear probes on linearly separable features reach near-perfect accuracy and mIoU on the device."""
    from scopebench.probes.classification import ClassificationSplit, train_classification_probe
    from scopebench.probes.config import ClassificationConfig, SegmentationConfig
    from scopebench.probes.segmentation import SegmentationSplit, train_segmentation_probe

    g = torch.Generator().manual_seed(4)
    centres = 6 * torch.randn(4, 16, generator=g)

    def cls_split(n: int) -> ClassificationSplit:
        labels = torch.randint(0, 4, (n,), generator=g)
        return ClassificationSplit(centres[labels] + torch.randn(n, 16, generator=g), labels)

    result = train_classification_probe(cls_split(256), cls_split(64), cls_split(64), n_classes=4,
                                        config=ClassificationConfig(epochs=10, trials=1, batch_size=64),
                                        device=DEVICE, progress=False)
    assert result.test_metric >= 0.95

    def seg_split(n: int) -> SegmentationSplit:
        labels = torch.randint(0, 4, (n, 4, 4), generator=g)
        tokens = centres[labels] + torch.randn(n, 4, 4, 16, generator=g)
        return SegmentationSplit(tokens, labels.repeat_interleave(2, 1).repeat_interleave(2, 2))

    seg = train_segmentation_probe(seg_split(64), seg_split(16), seg_split(16), n_classes=4,
                                   config=SegmentationConfig(epochs=10, trials=1, batch_size=16, ignore_index=-1),
                                   device=DEVICE, progress=False)
    assert seg.test_metric >= 0.8  # nearest-neighbour bilinear upsampling blurs only the cell borders
