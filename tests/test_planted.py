"""The planted backbone's ground truth holds: outliers by norm, SCC behaviour, attention, decodability."""
from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from scopebench.backbones.base import Backbone
from scopebench.backbones import planted
from scopebench.backbones.planted import PlantedBackbone
from scopebench.backbones.registry import get_spec
from scopebench.data.scenes import SyntheticScenes
from scopebench.analyses.outliers import auto_tau
from scopebench.pipeline.scc import scc

SPEC = get_spec("planted")
P, SIDE = SPEC.patch_size, SPEC.grid_side


@pytest.fixture(scope="module")
def backbone() -> PlantedBackbone:
    return PlantedBackbone(SPEC, seed=0)


@pytest.fixture(scope="module")
def scenes() -> list:
    data = SyntheticScenes(32, image_size=SPEC.image_size, seed=3)
    return [data[i] for i in range(len(data))]


@pytest.fixture(scope="module")
def pixels(scenes) -> torch.Tensor:
    return torch.stack([s.image for s in scenes])


def _patch_pixels(maps: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]`` -> ``[B, N, p*p]`` pixels of each patch, row-major."""
    b = maps.shape[0]
    return maps.reshape(b, SIDE, P, SIDE, P).permute(0, 1, 3, 2, 4).reshape(b, SIDE * SIDE, P * P)


def test_satisfies_backbone_protocol_and_shapes(backbone, pixels):
    assert isinstance(backbone, Backbone)
    assert backbone.weights_id == "planted:v9:seed0"
    assert backbone.preprocess.mean == (0.5, 0.5, 0.5) and backbone.preprocess.std == (0.5, 0.5, 0.5)
    out = backbone.forward_layer(pixels[:3], attention=True)
    n, d = SIDE * SIDE, SPEC.embed_dim
    assert out.tokens.shape == (3, n, d) and out.prefix.shape == (3, SPEC.n_prefix, d)
    assert (out.grid.rows, out.grid.cols, out.grid.patch_size, out.grid.n_prefix) == (SIDE, SIDE, P, SPEC.n_prefix)
    assert out.attention.shape == (3, SPEC.n_heads, n + SPEC.n_prefix, n + SPEC.n_prefix)
    assert torch.allclose(out.attention.sum(-1), torch.ones(()), atol=1e-5)
    assert (out.attention >= 0).all()
    assert backbone.forward_layer(pixels[:3]).attention is None


def test_tokens_are_local_plus_global_in_orthogonal_subspaces(backbone, pixels):
    truth = backbone.truth(pixels[:4])
    tokens = backbone.forward_layer(pixels[:4]).tokens
    torch.testing.assert_close(tokens, truth.local_part + truth.context_part + truth.global_part)
    basis = torch.cat([truth.local_basis, truth.global_basis], dim=1)
    torch.testing.assert_close(basis.T @ basis, torch.eye(SPEC.embed_dim), atol=1e-5, rtol=0)
    # each part lies in its own subspace
    assert (truth.local_part @ truth.global_basis).abs().max() < 1e-4
    assert (truth.global_part @ truth.local_basis).abs().max() < 1e-4
    # global part exactly at the outlier positions; local part = sparse codes on the local atoms
    assert torch.equal(truth.global_part.norm(dim=-1) > 0, truth.outlier_mask)
    torch.testing.assert_close(truth.local_part, truth.local_codes @ backbone.local_atoms)
    assert (truth.local_codes >= 0).all()
    detectors, fine = truth.local_codes[..., :planted.N_LOCAL], truth.local_codes[..., planted.N_LOCAL:]
    active = (detectors > 0).sum(-1).float()
    assert active.max() <= 12 and active.min() >= 2  # sparse, never empty
    # the fine texture: at most FINE_TOP_K of N_FINE atoms per patch, of norm FINE_NORM on a normal patch
    assert fine.shape[-1] == planted.N_FINE and (fine > 0).sum(-1).max() <= planted.FINE_TOP_K
    textured = ~truth.outlier_mask & (fine.norm(dim=-1) > 0)
    assert textured.float().mean() > 0.9
    torch.testing.assert_close(fine.norm(dim=-1)[textured], torch.full((int(textured.sum()),), planted.FINE_NORM))
    # the detectors are orthonormal and the fine atoms unit-norm, each group in its own subspace
    atoms = backbone.local_atoms
    torch.testing.assert_close(atoms.norm(dim=-1), torch.ones(atoms.shape[0]), atol=1e-5, rtol=0)
    assert (atoms[planted.N_LOCAL:] @ atoms[:planted.N_LOCAL].T).abs().max() < 1e-5
    # the global vectors are non-negative mixes of the global atoms
    coeffs = truth.global_part[truth.outlier_mask] @ backbone.global_atoms.T
    assert (coeffs > -1e-4).all()
    torch.testing.assert_close(coeffs @ backbone.global_atoms, truth.global_part[truth.outlier_mask],
                               atol=1e-4, rtol=0)


def test_normal_tokens_carry_context_atoms_orthogonal_to_the_outliers_on_moving_blobs(backbone, pixels):
    truth = backbone.truth(pixels)
    context = truth.context_part
    assert (context @ truth.local_basis).abs().max() < 1e-4
    assert (context @ backbone.global_atoms.T).abs().max() < 1e-4  # never along an outlier atom
    assert (context[truth.outlier_mask] == 0).all()  # outliers carry the global vector instead
    amplitude, chosen = truth.context_amplitude, truth.context_choice
    assert amplitude.shape == (pixels.shape[0], planted.CONTEXT_PER_VIEW, SIDE * SIDE)
    assert amplitude.min() >= 0 and amplitude.max() <= 1 + 1e-6
    share = (amplitude > 0).float().mean().item()
    assert 0.05 < share < 0.6  # blobs, not the whole view
    expected = planted.CONTEXT_NORM * torch.einsum("bkn,bkd->bnd", amplitude, backbone.context_atoms[chosen])
    torch.testing.assert_close(context, expected, atol=1e-5, rtol=0)
    # each view carries CONTEXT_PER_VIEW distinct atoms, and views differ in which
    assert all(len(set(row.tolist())) == planted.CONTEXT_PER_VIEW for row in chosen)
    assert len({tuple(sorted(row.tolist())) for row in chosen}) > pixels.shape[0] // 2


@pytest.mark.parametrize("shift", [1, 3])
def test_context_blobs_move_with_the_view(backbone, pixels, shift):
    pair = scc(pixels, shift, patch_size=P, grid_side=SIDE)
    a, b = backbone.truth(pair.view_a), backbone.truth(pair.view_b)
    ov = pair.overlap
    moved = (a.context_amplitude[:, :, ov.in_a] - b.context_amplitude[:, :, ov.in_b]).abs().amax(-1) > 0.1
    assert moved.float().mean() >= 0.9


def test_larger_planted_sizes_add_only_a_class_informative_context_on_a_blob(backbone, scenes, pixels):
    """Figure 8's mechanism: planted-b and planted-l carry the default's tokens plus a semantic context that says
    the view's dominant class, along the semantic atoms (orthogonal to the outliers' atoms), on a moving blob."""
    small = backbone.truth(pixels)
    assert (small.semantic_codes == 0).all()
    labels = torch.tensor([s.label for s in scenes])
    for name in ("planted-b", "planted-l"):
        larger = PlantedBackbone(get_spec(name), seed=0)
        size = planted.SEMANTIC_CONTEXT[get_spec(name).size]
        big = larger.truth(pixels)
        for field in ("outlier_mask", "local_part", "global_part", "context_choice", "context_amplitude"):
            assert torch.equal(getattr(big, field), getattr(small, field)), field
        extra = big.context_part - small.context_part
        assert (extra[big.outlier_mask] == 0).all()
        assert (extra @ larger.global_atoms.T).abs().max() < 1e-4 and (extra @ big.local_basis).abs().max() < 1e-4
        # every token's extra is a share in [0, 1] of the view's one semantic vector, at this size's norm
        vector = size * big.semantic_codes @ larger.semantic_atoms  # [B, D]
        share = (extra @ vector[..., None]).squeeze(-1) / vector.pow(2).sum(-1, keepdim=True)
        torch.testing.assert_close(extra, share[..., None] * vector[:, None, :], atol=1e-5, rtol=0)
        assert share.min() > -1e-5 and share.max() < 1 + 1e-5 and 0.02 < (share > 0).float().mean() < 0.6
        torch.testing.assert_close(big.semantic_codes.norm(dim=-1), torch.ones(len(scenes)))
        # the strongest semantic atom names the class: chance is 1/8 (4 of 32 scenes, sd 1.9); 12 is 4 sd above
        assert (big.semantic_codes.argmax(-1) == labels).sum() >= 12
        assert larger.weights_id == f"planted:{planted.VERSION}:seed0:semantic={size}"


def test_planted_sizes_are_the_registry_family(backbone):
    """Each registry size has its semantic context (the claims' PLANTED_FAMILY follows the registry:
    tests/test_claims_relations.py)."""
    from scopebench.backbones.registry import REGISTRY

    family = [spec for spec in REGISTRY.values() if spec.is_planted]
    assert [spec.size for spec in family] == list(planted.SEMANTIC_CONTEXT)
    assert list(planted.SEMANTIC_CONTEXT.values()) == sorted(planted.SEMANTIC_CONTEXT.values())
    shared = [spec.model_dump(exclude={"name", "size"}) for spec in family]
    assert all(fields == shared[0] for fields in shared)  # the sizes differ in the planted mechanism alone
    assert backbone.weights_id == f"planted:{planted.VERSION}:seed0"


def test_local_part_is_a_function_of_the_patch_alone(backbone, pixels):
    edited = pixels[:2].clone()
    r, c = 5, 9
    edited[:, :, r * P : (r + 1) * P, c * P : (c + 1) * P] = torch.rand(2, 3, P, P, generator=torch.Generator().manual_seed(0))
    before, after = backbone.truth(pixels[:2]).patch_codes, backbone.truth(edited).patch_codes
    changed = (before - after).abs().amax(dim=(0, 2)) > 0
    assert changed.nonzero().flatten().tolist() == [r * SIDE + c]


def test_fine_texture_is_the_rescaled_top_k_of_rectified_filters_exactly(backbone, pixels):
    """The in-place arithmetic of ``_fine_codes`` gives the formula's values bit for bit (the same float64 ops)."""
    patches = backbone._patches(pixels)
    flat = patches.reshape(*patches.shape[:2], -1)
    score = ((flat - flat.mean(-1, keepdim=True)) @ backbone._fine_filters).clamp(min=0)
    kth = score.topk(planted.FINE_TOP_K, dim=-1).values[..., -1:]
    kept = torch.where(score >= kth, score, torch.zeros_like(score))
    expected = planted.FINE_NORM * kept / kept.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    codes = backbone._fine_codes(patches)
    assert torch.equal(codes, expected)
    assert bool(((codes > 0).sum(-1) == planted.FINE_TOP_K).all())
    torch.testing.assert_close(codes.norm(dim=-1), torch.full(codes.shape[:2], planted.FINE_NORM, dtype=codes.dtype))


def test_outlier_positions_keep_a_tenth_of_their_patch(backbone, pixels):
    truth = backbone.truth(pixels)
    share = torch.where(truth.outlier_mask, 0.1, 1.0)[..., None]
    torch.testing.assert_close(truth.local_codes, truth.patch_codes * share)
    local_norm = truth.local_part.norm(dim=-1)
    assert local_norm[truth.outlier_mask].mean() < 0.2 * local_norm[~truth.outlier_mask].mean()
    with pytest.raises(ValueError, match="outlier_local_share"):
        PlantedBackbone(SPEC, outlier_local_share=1.5)
    assert PlantedBackbone(SPEC, outlier_local_share=1.0).weights_id == "planted:v9:seed0:olocal=1.0"


def test_outliers_by_norm_match_the_planted_positions(backbone, pixels):
    truth = backbone.truth(pixels)
    norms = backbone.forward_layer(pixels).tokens.norm(dim=-1)
    fraction = truth.outlier_mask.float().mean().item()
    assert 0.02 <= fraction <= 0.03
    normal_max = norms[~truth.outlier_mask].max().item()
    outlier_min = norms[truth.outlier_mask].min().item()
    # an empty valley: the global part alone has norm >= 0.6 x GLOBAL_NORM = 7.2; a normal token (local part
    # ~1-3, four context atoms of peak norm 2) stays under 4
    assert np.log(outlier_min) - np.log(normal_max) > np.log(1.8)
    tau = auto_tau(norms.numpy())
    assert torch.equal(norms > tau, truth.outlier_mask)
    for threshold in np.geomspace(normal_max * 1.01, outlier_min * 0.99, 7):
        assert torch.equal(norms > threshold, truth.outlier_mask)


def test_batch_independent_and_seeded(backbone, pixels):
    whole = backbone.forward_layer(pixels[:6])
    alone = backbone.forward_layer(pixels[4:5])
    torch.testing.assert_close(whole.tokens[4:5], alone.tokens)
    other = PlantedBackbone(SPEC, seed=1)
    assert other.weights_id == "planted:v9:seed1"
    assert not torch.allclose(other.forward_layer(pixels[:1]).tokens, whole.tokens[:1], atol=1e-3)
    assert PlantedBackbone(SPEC, global_norm=30.0).weights_id == "planted:v9:seed0:norm=30.0"
    again = PlantedBackbone(SPEC, seed=0)
    torch.testing.assert_close(again.forward_layer(pixels[:6]).tokens, whole.tokens)


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_scc_local_parts_follow_content_and_outliers_move(backbone, pixels, shift):
    pair = scc(pixels, shift, patch_size=P, grid_side=SIDE)
    a, b = backbone.truth(pair.view_a), backbone.truth(pair.view_b)
    ov = pair.overlap
    torch.testing.assert_close(a.patch_codes[:, ov.in_a], b.patch_codes[:, ov.in_b], atol=1e-6, rtol=0)
    normal = ~a.outlier_mask[:, ov.in_a] & ~b.outlier_mask[:, ov.in_b]  # outliers keep only part of the patch
    torch.testing.assert_close(a.local_part[:, ov.in_a][normal], b.local_part[:, ov.in_b][normal], atol=1e-6, rtol=0)
    # outlier content cells on the overlap differ between views for most images
    cells_a, cells_b = a.outlier_mask[:, ov.in_a], b.outlier_mask[:, ov.in_b]
    moved = (cells_a != cells_b).any(dim=1).sum().item()
    assert moved >= 0.9 * pixels.shape[0]
    for truth in (a, b):
        assert 0.02 <= truth.outlier_mask.float().mean().item() <= 0.03


def _w1(p: np.ndarray, q: np.ndarray, cost: np.ndarray) -> float:
    return float(ot.emd2(p / p.sum(), q / q.sum(), cost))


def test_attention_normal_rows_follow_content_outlier_rows_do_not(backbone, pixels):
    shift = 2
    pair = scc(pixels[:6], shift, patch_size=P, grid_side=SIDE)
    ov, pre = pair.overlap, SPEC.n_prefix
    attn_a = backbone.forward_layer(pair.view_a, attention=True).attention.double()
    attn_b = backbone.forward_layer(pair.view_b, attention=True).attention.double()
    mask_a, mask_b = backbone.truth(pair.view_a).outlier_mask, backbone.truth(pair.view_b).outlier_mask
    # rows over overlap keys, renormalised, in content coordinates: [B, H, cells, cells]
    rows_a = attn_a[:, :, pre + ov.in_a][:, :, :, pre + ov.in_a]
    rows_b = attn_b[:, :, pre + ov.in_b][:, :, :, pre + ov.in_b]
    rows_a, rows_b = rows_a / rows_a.sum(-1, keepdim=True), rows_b / rows_b.sum(-1, keepdim=True)
    normal = ~mask_a[:, ov.in_a] & ~mask_b[:, ov.in_b]  # [B, cells]
    outlier = mask_a[:, ov.in_a]
    assert outlier.sum() > 0
    tv = 0.5 * (rows_a - rows_b).abs().sum(-1)  # [B, H, cells]
    assert tv.permute(0, 2, 1)[normal].max() < 0.2  # only the pull toward the view centre differs (next test)
    # outlier rows change between views (an outlier query whose view kept the same outliers may not)
    assert (tv.permute(0, 2, 1)[outlier] > 0.3).float().mean() >= 0.9
    u, v = np.meshgrid(np.arange(ov.side), np.arange(ov.side), indexing="ij")
    centres = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64)
    cost = ot.dist(centres, centres, metric="euclidean")
    rng = np.random.default_rng(0)
    normal_idx = normal.nonzero().tolist()
    normal_w1 = [_w1(rows_a[i, h, c].numpy(), rows_b[i, h, c].numpy(), cost)
                 for i, c in (normal_idx[k] for k in rng.choice(len(normal_idx), 12, replace=False))
                 for h in range(SPEC.n_heads)]
    outlier_w1 = [_w1(rows_a[i, h, c].numpy(), rows_b[i, h, c].numpy(), cost)
                  for i, c in outlier.nonzero().tolist() for h in range(SPEC.n_heads)]
    assert np.mean(outlier_w1) > 5 * np.mean(normal_w1)
    assert np.mean(outlier_w1) > 2.0  # broad vs local: patches of transport, not a rounding error
    # normal queries attend locally: most mass within 2 patches of the query (head 0, narrowest)
    dist = torch.cdist(torch.from_numpy(centres), torch.from_numpy(centres))
    near = (rows_a[:, 0] * (dist <= 2)).sum(-1)  # [B, cells]
    assert near[normal].mean() > 0.9


def _normal_row_tv(backbone: PlantedBackbone, pixels: torch.Tensor, shift: int) -> float:
    """Mean total variation between views of normal queries' attention rows over overlap keys (content coords)."""
    pair = scc(pixels, shift, patch_size=P, grid_side=SIDE)
    ov, pre = pair.overlap, SPEC.n_prefix
    rows = []
    for view, cells in ((pair.view_a, ov.in_a), (pair.view_b, ov.in_b)):
        attn = backbone.forward_layer(view, attention=True).attention.double()
        r = attn[:, :, pre + cells][:, :, :, pre + cells]
        rows.append(r / r.sum(-1, keepdim=True))
    normal = ~backbone.truth(pair.view_a).outlier_mask[:, ov.in_a] & ~backbone.truth(pair.view_b).outlier_mask[:, ov.in_b]
    tv = 0.5 * (rows[0] - rows[1]).abs().sum(-1).permute(0, 2, 1)  # [B, cells, H]
    return float(tv[normal].mean())


def test_normal_queries_differ_between_views_only_by_the_pull_toward_the_view_centre(backbone, pixels, monkeypatch):
    """The absolute-position pull is the one thing that changes a normal query's row between SCC views, and
    its effect grows with the shift (content at grid offset s sits s patches closer to one view's centre)."""
    tv = [_normal_row_tv(backbone, pixels[:6], s) for s in (1, 3, 5)]
    assert tv[0] > 1e-3 and tv[0] < tv[1] < tv[2]
    monkeypatch.setattr(planted, "POSITION_BIAS", 0.0)
    assert _normal_row_tv(backbone, pixels[:6], 3) < 1e-6


def _lstsq_fit(train_x, train_y, test_x):
    """Least squares with a bias column (tiny ridge: the parts span only their subspace)."""
    def add_bias(x):
        return torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)

    design = add_bias(train_x)
    gram = design.T @ design
    ridge = 1e-6 * gram.trace() / gram.shape[0] * torch.eye(gram.shape[0], dtype=torch.float64)
    weights = torch.linalg.solve(gram + ridge, design.T @ train_y.double())
    return add_bias(test_x) @ weights


def test_class_and_depth_are_linearly_decodable_mostly_from_the_local_part(backbone, scenes, pixels):
    n_classes = 8
    truth = backbone.truth(pixels)
    tokens = truth.local_part + truth.global_part
    seg = _patch_pixels(torch.stack([s.segmentation for s in scenes]))
    pure = (seg == seg[..., :1]).all(-1)  # patches inside one region
    label = seg[..., 0]
    depth = _patch_pixels(torch.stack([s.depth for s in scenes])).mean(-1)
    train, test = slice(0, 20), slice(20, None)
    onehot = torch.nn.functional.one_hot(label, n_classes)

    def accuracy(feats):
        pred = _lstsq_fit(feats[train][pure[train]], onehot[train][pure[train]], feats[test][pure[test]])
        return (pred.argmax(-1) == label[test][pure[test]]).double().mean().item()

    def r2(feats):
        pred = _lstsq_fit(feats[train].flatten(0, 1), depth[train].reshape(-1, 1), feats[test].flatten(0, 1))
        y = depth[test].reshape(-1, 1).double()
        return 1 - ((pred - y) ** 2).sum().item() / ((y - y.mean()) ** 2).sum().item()

    acc_all, acc_local, acc_global = accuracy(tokens), accuracy(truth.local_part), accuracy(truth.global_part)
    assert acc_all > 0.8 and acc_local > 0.8  # chance is 1/8
    assert acc_local >= acc_all - 0.02
    assert acc_global < 0.3
    r2_all, r2_local, r2_global = r2(tokens), r2(truth.local_part), r2(truth.global_part)
    assert r2_all > 0.7 and r2_local >= r2_all - 0.02
    assert r2_global < 0.1


def test_attention_prefix_rows_favour_outliers(backbone, pixels):
    out = backbone.forward_layer(pixels[:4], attention=True)
    mask = backbone.truth(pixels[:4]).outlier_mask
    pre = SPEC.n_prefix
    prefix_rows = out.attention[:, :, :pre, pre:]  # [B, H, P, N]
    on_outliers = (prefix_rows * mask[:, None, None, :]).sum(-1)
    assert (on_outliers > 0.1).all()  # 5 of 196 keys get far more than their 2.5% share
    outlier_rows = out.attention[:, :, pre:, pre:].permute(0, 2, 1, 3)[mask]  # [n_out, H, N]
    entropy = -(outlier_rows * outlier_rows.clamp(min=1e-12).log()).sum(-1)
    normal_rows = out.attention[:, :, pre:, pre:].permute(0, 2, 1, 3)[~mask]
    normal_entropy = -(normal_rows * normal_rows.clamp(min=1e-12).log()).sum(-1)
    assert entropy.min() > normal_entropy.max()  # outlier queries attend more broadly


def test_bad_inputs_raise_clear_errors(backbone):
    with pytest.raises(ValueError, match=r"pixels \[B, 3, 112, 112\]"):
        backbone.forward_layer(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="float"):
        backbone.forward_layer(torch.zeros(1, 3, 112, 112, dtype=torch.uint8))
    with pytest.raises(ValueError, match="planted spec"):
        PlantedBackbone(get_spec("deit3-s"))
    with pytest.raises(ValueError, match="embed_dim"):
        PlantedBackbone(SPEC.model_copy(update={"embed_dim": 32}))
    with pytest.raises(ValueError, match=r"size 'xl'; the planted family's sizes are s, b, l"):
        PlantedBackbone(SPEC.model_copy(update={"size": "xl"}))
    with pytest.raises(ValueError, match="semantic_context must be >= 0"):
        PlantedBackbone(SPEC, semantic_context=-1.0)
