"""Architectures: protocol, encode semantics, sparse gradients vs a dense autograd reference."""
from __future__ import annotations

import copy

import pytest
import torch

from scopebench.sae import ARCHITECTURES, BatchTopKSAE, build_sae
from scopebench.sae.base import SparseAutoencoder
from scopebench.sae.sparse_ops import Selection, batch_topk_flat_indices

D_IN, D_SAE = 12, 40


pytestmark = pytest.mark.usefixtures("one_thread")


def _sae(arch: str, seed: int = 0, **hparams) -> torch.nn.Module:
    sae = build_sae({"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "k": 4, "aux_k": 5, **hparams})
    gen = torch.Generator().manual_seed(seed)
    sae.initialise(gen, data_mean=torch.randn(D_IN, generator=gen) * 0.1)
    with torch.no_grad():  # untie encoder/decoder and give biases some values
        sae.W_enc.add_(0.3 * torch.randn(D_SAE, D_IN, generator=gen))
        sae.b_enc.copy_(0.1 * torch.randn(D_SAE, generator=gen))
    return sae


def _x(n: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_satisfies_protocol_and_config_rebuilds_it(arch):
    sae = _sae(arch)
    assert isinstance(sae, SparseAutoencoder)
    assert sae.W_dec.shape == (D_SAE, D_IN)
    rebuilt = build_sae(sae.config)
    assert type(rebuilt) is type(sae) and (rebuilt.d_in, rebuilt.d_sae) == (D_IN, D_SAE)
    codes = sae.encode(_x())
    assert codes.shape == (32, D_SAE) and bool((codes >= 0).all())


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_encode_is_batch_independent(arch):
    sae = _sae(arch)
    if isinstance(sae, BatchTopKSAE):
        sae.threshold.fill_(0.2)
    x = _x()
    together = sae.encode(x)
    alone = torch.cat([sae.encode(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(together, alone)


def test_build_sae_rejects_unknown_architecture_and_missing_d_in():
    with pytest.raises(ValueError, match="unknown SAE architecture 'gated'.*batchtopk"):
        build_sae({"architecture": "gated", "d_in": 4, "d_sae": 8})
    with pytest.raises(ValueError, match="d_in"):
        build_sae({"architecture": "topk", "d_sae": 8})
    assert build_sae({"architecture": "topk", "d_in": 4, "expansion_factor": 3, "k": 2}).d_sae == 12


def test_topk_encode_keeps_the_k_largest_relu_preactivations():
    sae = _sae("topk")
    x = _x()
    pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    codes = sae.encode(x).detach()
    for row, p in zip(codes, pre.detach()):
        top = torch.argsort(p, descending=True)[:4]
        expected = torch.zeros(D_SAE)
        expected[top] = p[top].clamp_min(0)
        torch.testing.assert_close(row, expected)


def test_batchtopk_training_selects_k_times_batch_largest_across_the_batch():
    sae = _sae("batchtopk")
    x = _x(n=16)
    _, pre, sel, values = sae.sparse_forward(x)
    assert values.numel() == 4 * 16
    flat = torch.relu(pre).reshape(-1)
    expected = torch.sort(flat.topk(64).indices).values
    torch.testing.assert_close(sel.rows * D_SAE + sel.cols, expected)
    per_row = torch.bincount(sel.rows, minlength=16)
    assert per_row.sum() == 64 and per_row.max() > per_row.min()  # varies per token, unlike TopK


def test_batchtopk_threshold_is_the_mean_smallest_kept_value_over_calibration_batches():
    sae = _sae("batchtopk")
    assert float(sae.threshold) < 0  # not yet calibrated: inference falls back to per-token top-k
    torch.testing.assert_close(sae.encode(_x()), _topk_twin(sae).encode(_x()))
    batches = [_x(n=16, seed=seed) for seed in (2, 3, 5)]
    smallest_kept = []
    with torch.no_grad():
        for x in batches:  # the k * batch largest ReLU pre-activations of the whole batch, computed densely
            pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
            kept = torch.relu(pre).reshape(-1).topk(4 * 16).values
            smallest_kept.append(float(kept[kept > 0].min()))
    sae.calibrate_(iter(batches))
    assert float(sae.threshold) == pytest.approx(sum(smallest_kept) / 3, rel=1e-5)
    sae.eval()
    x = _x(seed=4)
    pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    expected = torch.where(pre > sae.threshold, pre, torch.zeros_like(pre)).clamp_min(0)
    torch.testing.assert_close(sae.encode(x), expected)


def test_batchtopk_calibration_without_any_kept_activation_is_an_error():
    sae = _sae("batchtopk")
    with torch.no_grad():
        sae.b_enc.fill_(-1e6)  # nothing can fire
    with pytest.raises(ValueError, match="not trained"):
        sae.calibrate_([_x(n=8)])


def _topk_twin(sae: torch.nn.Module) -> torch.nn.Module:
    twin = build_sae(dict(sae.config, architecture="topk"))
    twin.load_state_dict({k: v for k, v in sae.state_dict().items() if k != "threshold"})
    return twin


def _dense_reference_loss(sae, x: torch.Tensor, dead: torch.Tensor, sel_fn) -> torch.Tensor:
    """Same loss as training_loss, with dense autograd everywhere (independent of sparse_ops)."""
    pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    sel: Selection = sel_fn(pre.detach())
    mask = torch.zeros_like(pre, dtype=torch.bool)
    mask[sel.rows, sel.cols] = True
    codes = torch.relu(pre) * mask
    xhat = codes @ sae.W_dec + sae.b_dec
    recon = ((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    residual = (x - xhat).detach()
    masked = pre.detach().masked_fill(~dead, float("-inf"))
    aux_idx = masked.topk(min(5, int(dead.sum())), dim=1).indices
    aux_mask = torch.zeros_like(mask).scatter_(1, aux_idx, True)
    aux_hat = (torch.relu(pre) * aux_mask) @ sae.W_dec
    aux = ((aux_hat - residual) ** 2).sum() / ((residual - residual.mean(0)) ** 2).sum()
    return recon + aux / 32


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_backward_matches_dense_autograd(arch):
    sae = _sae(arch).double()
    reference = copy.deepcopy(sae)
    x = _x().double()
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    loss, parts, fired = sae.training_loss(x, dead)
    loss.backward()
    ref_loss = _dense_reference_loss(reference, x, dead, reference._select)
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-10)
    assert parts["auxk"] > 0
    for name, param in sae.named_parameters():
        torch.testing.assert_close(param.grad, dict(reference.named_parameters())[name].grad, msg=name)
    codes = sae.encode(x)
    assert arch == "batchtopk" or torch.equal(fired, (codes > 0).any(0))


def test_decoder_gradient_projection_and_renormalisation():
    sae = _sae("topk")
    loss, _, _ = sae.training_loss(_x(), torch.zeros(D_SAE, dtype=torch.bool))
    loss.backward()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() > 1e-4  # there was a parallel component
    sae.project_decoder_grad_()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-6
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.normalise_decoder_()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))


def test_jumprelu_straight_through_threshold_gradient_by_hand():
    sae = build_sae({"architecture": "jumprelu", "d_in": 2, "d_sae": 2, "init_threshold": 0.5, "bandwidth": 0.2, "sparsity_coeff": 0.0})
    w_dec = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(w_dec)
    # token 0: pre-activations 0.55 (inside the window |pre - 0.5| < 0.1, fires) and 0.3 (below threshold)
    x = torch.tensor([[0.55, 0.3], [0.0, 0.0]])
    codes = sae.encode(x).detach()
    torch.testing.assert_close(codes, torch.tensor([[0.55, 0.0], [0.0, 0.0]]))
    loss, _, _ = sae.training_loss(x, torch.zeros(2, dtype=torch.bool))
    loss.backward()
    # dL/dtheta_j = sum_t dL/dcode_tj * (-theta_j / eps) * 1[|pre_tj - theta_j| < eps/2] / 1
    xhat = codes @ w_dec
    denom = ((x - x.mean(0)) ** 2).sum()
    dl_dcode0 = (2 * (xhat[0] - x[0]) * w_dec[0]).sum() / denom
    dl_dtheta0 = dl_dcode0 * (-0.5 / 0.2)
    assert abs(float(dl_dtheta0)) > 1e-3
    # the parameter is log(theta): chain rule multiplies by theta = 0.5
    assert sae.log_threshold.grad[0].item() == pytest.approx(float(dl_dtheta0) * 0.5, rel=1e-5)
    assert sae.log_threshold.grad[1].item() == 0.0  # outside the window: no gradient
    # with an L0 penalty, the step STE adds coeff * (-1/eps) * window / n_tokens to dL/dtheta
    sae.zero_grad()
    sae.hparams["sparsity_coeff"] = 1.0
    loss, parts, _ = sae.training_loss(x, torch.zeros(2, dtype=torch.bool))
    assert parts["l0"] == pytest.approx(0.5)
    loss.backward()
    expected = (float(dl_dtheta0) + 1.0 * (-1 / 0.2) / 2) * 0.5
    assert sae.log_threshold.grad[0].item() == pytest.approx(expected, rel=1e-5)


def test_relu_l1_loss_by_hand():
    sae = _sae("relu", l1_coeff=0.7)
    x = _x()
    loss, parts, _ = sae.training_loss(x, torch.zeros(D_SAE, dtype=torch.bool))
    codes = torch.relu((x - sae.b_dec) @ sae.W_enc.T + sae.b_enc)
    xhat = codes @ sae.W_dec + sae.b_dec
    recon = ((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    l1 = codes.sum(1).mean() / (x - x.mean(0)).norm(dim=1).mean()
    assert loss.item() == pytest.approx((recon + 0.7 * l1).item(), rel=1e-5)


def test_matryoshka_prefix_losses_use_only_prefix_latents():
    sae = _sae("matryoshka", group_fractions=[0.25, 1.0], group_weights=[0.3, 0.7])
    x = _x()
    no_dead = torch.zeros(D_SAE, dtype=torch.bool)
    loss, parts, _ = sae.training_loss(x, no_dead)
    pre = ((x - sae.b_dec) @ sae.W_enc.T + sae.b_enc).detach()
    flat = torch.relu(pre).reshape(-1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.topk(4 * len(x)).indices] = True
    codes = (flat * keep).reshape(pre.shape)
    fvu = {}
    for size in (10, 40):
        xhat = codes[:, :size] @ sae.W_dec[:size] + sae.b_dec
        fvu[size] = (((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()).item()
    assert parts["fvu_10"] == pytest.approx(fvu[10], rel=1e-5)
    assert parts["fvu_40"] == pytest.approx(fvu[40], rel=1e-5) == pytest.approx(parts["fvu"])
    assert loss.item() == pytest.approx(0.3 * fvu[10] + 0.7 * fvu[40], rel=1e-5)


def test_matryoshka_group_fractions_must_increase_to_the_whole_dictionary():
    from scopebench.sae.recipe import parse_recipe

    base = {"architecture": "matryoshka", "k": 4}
    for bad in ([1.0, 0.25], [0.25, 0.5], [0.25, 0.25, 1.0]):
        with pytest.raises(ValueError, match="strictly increase"):
            parse_recipe({**base, "group_fractions": bad})
    with pytest.raises(ValueError, match="round to the same size"):  # distinct fractions, same prefix of 40
        _sae("matryoshka", group_fractions=[0.5, 0.51, 1.0]).prefix_sizes
    assert _sae("matryoshka", group_fractions=[0.25, 0.5, 1.0]).prefix_sizes == [10, 20, 40]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_folding_the_input_scale_gives_the_same_reconstruction_on_raw_inputs(arch):
    sae = _sae(arch)
    if isinstance(sae, BatchTopKSAE):
        sae.threshold.fill_(0.3)
    scale = 2.5
    x = _x()
    codes_scaled = sae.encode(scale * x).detach()
    xhat_scaled = sae.decode(codes_scaled).detach()
    sae.fold_input_scale_(scale)
    torch.testing.assert_close(sae.encode(x).detach(), codes_scaled / scale, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sae.decode(sae.encode(x)).detach(), xhat_scaled / scale, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shift", [0.0, 3.0, -2.5])
def test_batch_topk_selection_with_estimated_cutoff_equals_exact_topk(shift):
    # shift 3: every entry positive (cut-off path); -2.5: few positives (fallback path, zeros selected)
    pre = torch.randn(64, 100, generator=torch.Generator().manual_seed(9)) + shift
    pre[5] += 4.0  # one token holds many of the batch's largest values
    for n_keep in (1, 64 * 3, 64 * 40):
        got = batch_topk_flat_indices(pre, n_keep)
        expected = torch.relu(pre).reshape(-1).topk(n_keep).indices
        assert got.numel() == n_keep
        torch.testing.assert_close(torch.sort(torch.relu(pre).reshape(-1)[got]).values,
                                   torch.sort(torch.relu(pre).reshape(-1)[expected]).values)
        if shift >= 0:
            assert set(got.tolist()) == set(expected.tolist())
