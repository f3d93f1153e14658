"""The planted backbone: a ViT stand-in whose tokens have known local and global structure.

No pretrained weights exist on our machines, and the paper's phenomena (high-norm
outlier tokens carrying global information, local features that follow content) only
arise in trained models.  This instrument plants them by construction, so every
downstream analysis can be checked against the truth (DESIGN.md, "The planted backbone").

Token of patch ``i`` in a view = ``local_i + context_i + global_i`` in ``R^256``; a fixed random orthonormal
basis splits it into a detector subspace (48), a fine-texture subspace (128) and a global subspace (80).  The
width is v8's point: at 64 (v7), 30 of 2,048 random unit directions reconstruct *any* token to FVU 0.004 by
matching pursuit, so an SAE there never has to learn the planted atoms (README, "Fidelity of the planted
default"); at 256 the same random dictionary leaves isotropic tokens at FVU 0.33, and the SAE learns the atoms:

- ``local_i`` is a fixed function of the patch's own pixels only, so under SCC the overlap's local parts
  match: non-negative responses of a small detector bank (colour sign detectors, oriented grating energies
  at a few frequencies, contrast, and a constant), sparsified to the strongest texture responses, each along
  its own basis direction; plus a *fine texture*: the ``FINE_TOP_K`` strongest of ``N_FINE`` rectified random
  pixel filters, each along its own random atom of the fine-texture subspace (a sparse code an SAE can
  recover: many features per token, as in trained ViTs).
- At outlier positions the local part shrinks to ``outlier_local_share`` (0.1) of the
  patch's responses: as in trained ViTs (Darcet et al. 2024, "Vision Transformers Need
  Registers"), high-norm tokens hold little of their patch, and an SAE reconstructs them
  better than the average token (the paper's Table 6: FVU_O < FVU_A for every backbone).
- ``global_i`` is zero except at ``round(outlier_fraction * N)`` outlier positions chosen
  by a smooth random field over the patch grid whose phases come from whole-view
  statistics (so the positions move when the view shifts).  There it is one large-norm
  vector per view, of norm 0.6-1.4 x ``global_norm`` set by the view: a shared dominant *global
  atom* plus a smaller non-negative mix of the other global atoms with weights from a
  fast-varying function of the view's brightness and contrast (nothing linear about class or depth).
  Stereotyped, so an SAE codes an outlier with a few latents (Table 6: L0_O < L0_A).
- ``context_i``: normal tokens carry view-level context too, as in trained ViTs: ``CONTEXT_PER_VIEW`` of
  ``N_CONTEXT`` atoms of the global subspace's part orthogonal to the outlier atoms, chosen by the view, each
  on its own view-phased blob field (blobs that move when the view shifts), peak norm ``CONTEXT_NORM``.  The
  features an SAE learns for it are context-dependent: with the outlier code, they make the high-CDS mode
  of Table 4 / Figure 6.  They also mislead a linear classifier a little, as the paper's Table 3 / Figure 8
  report: the context adds view-level nuisance dimensions that a probe trained on a finite set partly fits,
  so removing the high-CDS features raises its top-1.  v9's point: with 256 atoms at peak norm 2.0 (v8: 512
  at 1.5) each atom recurs often enough to be learnt as a feature yet is strong enough to mislead, so the
  gain's paired-bootstrap interval clears zero on the bench's 1,024 test scenes (README, "Fidelity of the
  planted default").  At population level extra features cannot hurt a linear probe: the gain, like the
  paper's half a point, is an estimation effect.

The planted family (Figure 8) has three sizes, ``planted`` (s, the embedded default), ``planted-b`` and
``planted-l``, which differ only in ``semantic_context`` (:data:`SEMANTIC_CONTEXT`): the larger sizes' normal
tokens also carry a class-informative context, a mix of semantic atoms weighted by the view's texture
orientations on a moving blob (:meth:`PlantedBackbone._semantic`).  That is the paper's reading of Figure 8,
larger models encode context in a form a linear classifier can use, planted: removing the low-CDS features
costs the larger sizes less.

Attention (per head): normal queries attend with a Gaussian in patch distance (width
per head) modulated by the similarity of the patches' detector responses and pulled toward the view centre
(``POSITION_BIAS``, in absolute grid coordinates: the same content elsewhere in the view
is attended a little differently, so normal queries' EMD grows with the SCC shift, the
paper's Table 9); outlier queries attend near-uniformly with extra weight on the other
outliers; prefix queries look at all patches, mostly at the outliers.
"""
from __future__ import annotations

from pathlib import Path

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scopebench.backbones.base import Grid, LayerOutput, Preprocess
from scopebench.backbones.registry import get_spec
from scopebench.backbones.spec import BackboneSpec

VERSION = "v9"
N_ORIENTATIONS = 8
FREQUENCIES = (0.5, 1.0, 1.5, 2.0, 2.5)  # grating detectors, cycles per patch
N_GLOBAL_ATOMS = 8
N_TEXTURE = N_ORIENTATIONS * len(FREQUENCIES)
N_LOCAL = 6 + N_TEXTURE + 2  # colour signs, texture energies, contrast, constant
FINE_DIM = 128  # dimensions of the fine-texture subspace
N_FINE = 512  # fine-texture atoms (random directions of that subspace) and the pixel filters behind them
FINE_TOP_K = 12  # fine-texture atoms each patch carries: recoverable, 12 ln(512 / 12) = 45 is well under 128
FINE_NORM = 2.0  # norm of a normal patch's fine texture
N_CONTEXT = 256  # context atoms, in the part of the global subspace the outlier atoms leave free
CONTEXT_PER_VIEW = 4  # context atoms each view carries, each on its own moving blob field
CONTEXT_BLOB_CUT = 0.5  # a blob field keeps what exceeds this share of its peak
OUTLIER_FRACTION = 0.025  # share of patch tokens carrying the global part (5 of 196)
GLOBAL_NORM = 12.0  # norm of the global vector; normal tokens have norm ~1-3
GLOBAL_VARIATION = 0.5  # norm of the view-dependent part of the global mix, relative to the shared atom
TEXTURE_TOP_K = 4  # texture detectors kept per patch
OUTLIER_LOCAL_SHARE = 0.1  # what remains of an outlier position's local part
CONTEXT_NORM = 2.0  # peak norm of each context atom a normal token carries
POSITION_BIAS = 1.0  # weight of normal queries' pull toward the view centre (absolute-position signal)
#: the planted family (Figure 8): each size's ``semantic_context``, the norm of the class-informative context its
#: normal tokens carry beside the hashed one; the sizes share everything else (width, grid, the SAE's cost)
SEMANTIC_CONTEXT = {"s": 0.0, "b": 1.0, "l": 2.0}
#: a direction's planted scope by its global_share: local below the first, global above the second, else mixed
SCOPE_CUTS = (0.2, 0.8)


@dataclass
class PlantedTruth:
    """What the planted backbone put into the tokens of a batch of views."""

    outlier_mask: torch.Tensor  # [B, N] bool: patch positions carrying the global part
    local_basis: torch.Tensor  # [D, dl] orthonormal columns spanning the local subspace (detectors + fine texture)
    global_basis: torch.Tensor  # [D, dg] orthonormal columns spanning the global subspace
    local_part: torch.Tensor  # [B, N, D] local_codes @ local_atoms
    global_part: torch.Tensor  # [B, N, D] zero outside the outlier positions
    patch_codes: torch.Tensor  # [B, N, N_LOCAL + N_FINE] detector, then fine-texture responses of each patch alone
    local_codes: torch.Tensor  # [B, N, N_LOCAL + N_FINE] on the local atoms: patch_codes, shrunk at outliers
    global_codes: torch.Tensor  # [B, n_global_atoms] non-negative coefficients of each view's global vector
    context_part: torch.Tensor  # [B, N, D] in the global subspace, zero at the outlier positions
    context_choice: torch.Tensor  # [B, CONTEXT_PER_VIEW] long: the context atoms each view carries
    context_amplitude: torch.Tensor  # [B, CONTEXT_PER_VIEW, N] in [0, 1]: each chosen atom's blob field
    semantic_codes: torch.Tensor  # [B, N_ORIENTATIONS] unit-norm weights of the semantic atoms (zero when off)


def _grating_templates(patch: int) -> torch.Tensor:
    """``[2, N_TEXTURE, patch*patch]`` cosine / sine gratings, normalised to unit response amplitude."""
    coords = torch.arange(patch, dtype=torch.float64) + 0.5 - patch / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    cos, sin = [], []
    for k in range(N_ORIENTATIONS):
        theta = math.pi * k / N_ORIENTATIONS
        along = math.cos(theta) * yy + math.sin(theta) * xx
        for f in FREQUENCIES:
            arg = 2 * math.pi * f * along / patch
            cos.append(torch.cos(arg).reshape(-1))
            sin.append(torch.sin(arg).reshape(-1))
    # a unit-amplitude matching grating gives projection ~ patch^2 / 2 on each pair
    return torch.stack([torch.stack(cos), torch.stack(sin)]) / (patch * patch / 2)


class PlantedBackbone:
    """Backbone-protocol instrument with planted local/global token structure (see module doc)."""

    def __init__(self, spec: BackboneSpec, seed: int = 0, *, outlier_fraction: float = OUTLIER_FRACTION,
                 global_norm: float = GLOBAL_NORM, texture_top_k: int = TEXTURE_TOP_K,
                 outlier_local_share: float = OUTLIER_LOCAL_SHARE, semantic_context: float | None = None) -> None:
        if not spec.is_planted:
            raise ValueError(f"PlantedBackbone needs a planted spec, got source={spec.source!r} ({spec.name})")
        needed = N_LOCAL + FINE_DIM + N_GLOBAL_ATOMS + CONTEXT_PER_VIEW
        if spec.embed_dim < needed:
            raise ValueError(f"planted spec embed_dim={spec.embed_dim} is too small: need at least {needed} "
                             f"({N_LOCAL} detector + {FINE_DIM} fine-texture + {N_GLOBAL_ATOMS} outlier directions "
                             f"+ {CONTEXT_PER_VIEW} free for the context)")
        if spec.image_size % spec.patch_size:
            raise ValueError(f"image_size {spec.image_size} is not a multiple of patch_size {spec.patch_size}")
        self.spec = spec
        self.seed = seed
        self.grid = Grid(patch_size=spec.patch_size, rows=spec.grid_side, cols=spec.grid_side, n_prefix=spec.n_prefix)
        self.n_outliers = max(1, round(outlier_fraction * self.grid.n_patches))
        if self.n_outliers >= self.grid.n_patches:
            raise ValueError(f"outlier_fraction={outlier_fraction} leaves no normal tokens")
        self.outlier_fraction = outlier_fraction
        self.global_norm = global_norm
        self.texture_top_k = texture_top_k
        if not 0.0 <= outlier_local_share <= 1.0:
            raise ValueError(f"outlier_local_share must lie in [0, 1], got {outlier_local_share}")
        self.outlier_local_share = outlier_local_share
        if semantic_context is None:
            if spec.size not in SEMANTIC_CONTEXT:
                raise ValueError(f"planted spec {spec.name!r} has size {spec.size!r}; the planted family's sizes are "
                                 f"{', '.join(SEMANTIC_CONTEXT)} (or pass semantic_context)")
            semantic_context = SEMANTIC_CONTEXT[spec.size]
        if semantic_context < 0:
            raise ValueError(f"semantic_context must be >= 0, got {semantic_context}")
        self.semantic_context = float(semantic_context)
        self.preprocess = Preprocess(image_size=spec.image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                     interpolation="bicubic", crop_pct=1.0)

        gen = torch.Generator().manual_seed(seed)
        dim = spec.embed_dim
        basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        self._local_basis = basis[:, :N_LOCAL].float()  # [D, N_LOCAL] one column per detector
        self._fine_basis = basis[:, N_LOCAL:N_LOCAL + FINE_DIM].float()  # [D, FINE_DIM]
        self._global_basis = basis[:, N_LOCAL + FINE_DIM:].float()  # [D, dg]
        dg = dim - N_LOCAL - FINE_DIM
        # the outlier atoms span the first N_GLOBAL_ATOMS columns of `mix`; the context lives in the rest
        mix, _ = torch.linalg.qr(torch.randn(dg, N_GLOBAL_ATOMS, generator=gen, dtype=torch.float64), mode="complete")
        self._global_atoms = (self._global_basis.double() @ mix[:, :N_GLOBAL_ATOMS]).T.float()  # [n_global, D]
        context_free = self._global_basis.double() @ mix[:, N_GLOBAL_ATOMS:]  # [D, dg - n_global]
        n_stats = 3 + N_ORIENTATIONS + 1
        self._global_mixing = torch.randn(N_GLOBAL_ATOMS, n_stats, generator=gen, dtype=torch.float64)
        # outlier-position field: a few plane waves over the grid, phases set per view
        self._field_waves = torch.randint(-3, 4, (4, 2), generator=gen).double()
        self._field_waves[self._field_waves.abs().sum(1) == 0] = 1.0
        self._phase_weights = torch.randn(4, n_stats, generator=gen, dtype=torch.float64)
        self._templates = _grating_templates(spec.patch_size)
        self._head_widths = torch.linspace(0.7, 2.0, spec.n_heads)  # Gaussian width in patches
        self._magnitude_weights = torch.randn(n_stats, generator=gen, dtype=torch.float64)
        self._head_content = torch.linspace(0.0, 3.0, spec.n_heads)  # weight of local-content similarity
        # context: blob fields (one phase map per carried atom), which atoms a view carries, the atoms themselves
        self._context_waves = torch.randint(-3, 4, (4, 2), generator=gen).double()
        self._context_waves[self._context_waves.abs().sum(1) == 0] = 1.0
        self._context_phase_weights = torch.randn(CONTEXT_PER_VIEW, 4, n_stats, generator=gen, dtype=torch.float64)
        self._context_select = torch.randn(N_CONTEXT, n_stats, generator=gen, dtype=torch.float64)
        self._context_atoms = (F.normalize(torch.randn(N_CONTEXT, context_free.shape[1], generator=gen,
                                                       dtype=torch.float64), dim=1) @ context_free.T).float()
        # fine texture: rectified random linear filters of the patch's pixels, each along its own atom
        n_pixels = 3 * spec.patch_size ** 2
        self._fine_filters = torch.randn(n_pixels, N_FINE, generator=gen, dtype=torch.float64) / n_pixels ** 0.5
        self._fine_atoms = (F.normalize(torch.randn(N_FINE, FINE_DIM, generator=gen, dtype=torch.float64), dim=1)
                            @ self._fine_basis.double().T).float()  # [N_FINE, D]
        # the local atoms and the local subspace, detectors first: what every truth() call reads
        self._local_atoms = torch.cat([self._local_basis.T, self._fine_atoms])  # [N_LOCAL + N_FINE, D]
        self._local_span = torch.cat([self._local_basis, self._fine_basis], dim=1)  # [D, N_LOCAL + FINE_DIM]
        # the semantic context of the larger planted sizes, drawn last so that the other draws stay v9's
        self._semantic_phase_weights = torch.randn(4, n_stats, generator=gen, dtype=torch.float64)
        self._semantic_atoms = (F.normalize(torch.randn(N_ORIENTATIONS, context_free.shape[1], generator=gen,
                                                        dtype=torch.float64), dim=1) @ context_free.T).float()

    @property
    def weights_id(self) -> str:
        """``planted:<VERSION>:seed<seed>``, plus any non-default construction knob or geometry (both change tokens)."""
        knobs = {"frac": (self.outlier_fraction, OUTLIER_FRACTION), "norm": (self.global_norm, GLOBAL_NORM),
                 "topk": (self.texture_top_k, TEXTURE_TOP_K),
                 "olocal": (self.outlier_local_share, OUTLIER_LOCAL_SHARE),
                 "semantic": (self.semantic_context, 0.0),
                 "geometry": (self.spec.geometry_id, get_spec("planted").geometry_id)}
        extra = "".join(f":{name}={value}" for name, (value, default) in knobs.items() if value != default)
        return f"planted:{VERSION}:seed{self.seed}{extra}"

    @property
    def local_atoms(self) -> torch.Tensor:
        """``[N_LOCAL + N_FINE, D]`` unit directions (rows): the detectors' (orthonormal), then the fine texture's."""
        return self._local_atoms.clone()

    @property
    def global_atoms(self) -> torch.Tensor:
        """``[n_global_atoms, D]`` unit directions the outliers' global vectors are mixed from (rows)."""
        return self._global_atoms.clone()

    @property
    def context_atoms(self) -> torch.Tensor:
        """``[N_CONTEXT, D]`` unit directions of the context (rows), orthogonal to every global atom."""
        return self._context_atoms.clone()

    @property
    def semantic_atoms(self) -> torch.Tensor:
        """``[N_ORIENTATIONS, D]`` unit directions of the semantic context (rows), one per texture orientation, in
        the context's subspace (orthogonal to every global atom)."""
        return self._semantic_atoms.clone()

    def global_share(self, directions: torch.Tensor) -> torch.Tensor:
        """``[n]``: the share of each row of ``directions [n, D]``'s squared norm in the planted global subspace
        (the outliers' and the context's atoms): 1 for a global direction, 0 for a local one.  How an SAE
        feature's planted scope is read from its decoder row (:data:`SCOPE_CUTS`)."""
        rows = F.normalize(directions.detach().to("cpu", torch.float64), dim=-1)
        return (rows @ self._global_basis.double()).pow(2).sum(-1)

    # -- token construction -------------------------------------------------------------

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        size = self.spec.image_size
        if pixels.dim() != 4 or pixels.shape[1] != 3 or pixels.shape[2:] != (size, size):
            raise ValueError(f"planted backbone expects pixels [B, 3, {size}, {size}] in [0, 1], got "
                             f"{tuple(pixels.shape)}; resize with scopebench.pipeline.scc.square_resize first")
        if not pixels.is_floating_point():
            raise ValueError(f"pixels must be float in [0, 1], got dtype {pixels.dtype}")

    def _patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, N, 3, p*p]`` normalised pixels of each patch, row-major over the grid."""
        mean = torch.tensor(self.preprocess.mean, dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess.std, dtype=torch.float64).view(1, 3, 1, 1)
        x = (pixels.double().cpu() - mean) / std
        p, rows, cols = self.spec.patch_size, self.grid.rows, self.grid.cols
        x = x.reshape(x.shape[0], 3, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(x.shape[0], rows * cols, 3, p * p)

    def _local_codes(self, patches: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """``[B, N, dl]`` non-negative detector responses, a function of each patch alone."""
        colour = patches.mean(-1)  # [B, N, 3]
        # keep only the strongest texture responses: sparse, as an SAE would like
        kth = energy.topk(self.texture_top_k, dim=-1).values[..., -1:]
        energy = torch.where(energy >= kth, energy, torch.zeros_like(energy))
        contrast = patches.mean(-2).std(-1, keepdim=True)
        constant = torch.ones_like(contrast)
        return torch.cat([colour.clamp(min=0), (-colour).clamp(min=0), energy, contrast, constant], dim=-1)

    def _view_stats(self, patches: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """``[B, n_stats]`` whole-view statistics, each roughly centred on zero.

        Mean colour (normalised units), the view's share of texture energy per
        orientation minus the uniform share (scaled by the number of orientations), and
        the mean patch contrast minus 0.25.
        """
        colour = patches.mean(dim=(1, 3))
        orientation = energy.reshape(*energy.shape[:2], N_ORIENTATIONS, len(FREQUENCIES)).sum((1, 3))
        share = orientation / orientation.sum(-1, keepdim=True).clamp(min=1e-12)
        contrast = patches.mean(-2).std(-1).mean(1, keepdim=True)
        return torch.cat([colour, N_ORIENTATIONS * share - 1.0, contrast - 0.25], dim=-1)

    def _texture_energy(self, patches: torch.Tensor) -> torch.Tensor:
        """``[B, N, N_TEXTURE]`` oriented grating energies of each patch's grey-level pattern."""
        grey = patches.mean(-2)
        grey = grey - grey.mean(-1, keepdim=True)
        return torch.sqrt((grey @ self._templates[0].T) ** 2 + (grey @ self._templates[1].T) ** 2)

    def _view_field(self, stats: torch.Tensor, waves: torch.Tensor, phase_weights: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` a few plane waves over the patch grid whose phases come from the whole view's statistics."""
        phases = 2 * math.pi * torch.frac(37.0 * (stats @ phase_weights.T))  # [B, waves]
        rows, cols = self.grid.rows, self.grid.cols
        r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                              indexing="ij")
        pos = torch.stack([r.reshape(-1) / rows, c.reshape(-1) / cols], dim=-1)  # [N, 2]
        return torch.cos(2 * math.pi * (pos @ waves.T)[None] + phases[:, None, :]).sum(-1)

    def _outlier_mask(self, stats: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` bool: top-scoring positions of a view-phased random field over the grid."""
        field = self._view_field(stats, self._field_waves, self._phase_weights)
        top = field.topk(self.n_outliers, dim=-1).indices
        mask = torch.zeros(field.shape, dtype=torch.bool)
        mask.scatter_(1, top, True)
        return mask

    @staticmethod
    def _context_stats(stats: torch.Tensor) -> torch.Tensor:
        """What the global vector depends on: a fast-varying function of brightness and contrast.

        It must change with the whole view yet say nothing linear about class or depth:
        colour and orientation say the class and contrast says the depth, so a global part
        built from them directly would let a probe read the task without any local feature.
        The paper finds the opposite (local features carry what linear probes use), and so
        must the instrument.
        """
        context = torch.zeros_like(stats)
        context[:, 0] = torch.sin(40.0 * stats[:, :3].mean(-1))
        context[:, -1] = torch.sin(40.0 * stats[:, -1])
        return context

    def _global_codes(self, stats: torch.Tensor) -> torch.Tensor:
        """``[B, n_global_atoms]`` unit-norm non-negative mixing weights of each view's global vector.

        Stereotyped, as outlier tokens are in trained ViTs: one dominant atom shared by all
        views plus a smaller view-dependent mix of the others, so the global part is nearly
        one direction and an SAE can represent it with a handful of features.
        """
        varying = (self._context_stats(stats) @ self._global_mixing.T).clamp(min=0)[:, 1:]
        varying = GLOBAL_VARIATION * varying / varying.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        weights = torch.cat([torch.ones_like(varying[:, :1]), varying], dim=-1)
        return weights / weights.norm(dim=-1, keepdim=True)

    def _fine_codes(self, patches: torch.Tensor) -> torch.Tensor:
        """``[B, N, N_FINE]`` fine-texture coefficients, a function of each patch alone, of norm ``FINE_NORM``.

        The ``FINE_TOP_K`` strongest of ``N_FINE`` rectified random filters of the patch's mean-free pixels,
        rescaled to unit norm: a sparse code over many atoms, as a trained ViT's patch tokens hold far more
        features than a few detectors.  Without it the tokens live in a few dozen directions, and an SAE of
        2,048 latents can reconstruct them from random directions (README, "Fidelity of the planted default").
        """
        flat = patches.reshape(*patches.shape[:2], -1)
        score = ((flat - flat.mean(-1, keepdim=True)) @ self._fine_filters).clamp_(min=0)
        kth = score.topk(FINE_TOP_K, dim=-1).values[..., -1:]
        # in place: [B, N, N_FINE] float64 temporaries were most of this method's time (same values)
        score.masked_fill_(score < kth, 0.0)
        norm = score.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return score.mul_(FINE_NORM).div_(norm)

    def _context(self, stats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The context atoms each view carries ``[B, CONTEXT_PER_VIEW]`` and their blob fields ``[B, K, N]``.

        Normal tokens of trained ViTs carry view-level context beside their patch.  Here a view carries
        ``CONTEXT_PER_VIEW`` of ``N_CONTEXT`` atoms, chosen by a fast-varying hash of its statistics (so
        nothing linear about class or depth), each on its own blob field whose phases come from the view
        (so the blobs move when the view shifts, and the features an SAE learns for them are
        context-dependent).  The atoms are orthogonal to the outliers' global atoms: an SAE's local
        features learn to ignore the outlier direction, and a context sharing it would modulate them.
        """
        chosen = (torch.sin(40.0 * stats) @ self._context_select.T).topk(CONTEXT_PER_VIEW, dim=-1).indices
        fields = torch.stack([self._view_field(stats, self._context_waves, weights)
                              for weights in self._context_phase_weights], dim=1)  # [B, K, N]
        return chosen, self._blobs(fields, mask[:, None, :])

    @staticmethod
    def _blobs(fields: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[..., N]`` blob amplitudes in [0, 1] of view fields ``[..., N]``: what exceeds ``CONTEXT_BLOB_CUT`` of
        each field's peak, scaled to a peak of 1, and zero where ``mask`` (the outlier positions) is set."""
        fields = (fields - CONTEXT_BLOB_CUT * fields.amax(-1, keepdim=True)).clamp(min=0)
        amplitude = fields / fields.amax(-1, keepdim=True).clamp(min=1e-12)
        return torch.where(mask, 0.0, amplitude)

    def _semantic(self, stats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The semantic context of a view: unit-norm weights of the semantic atoms ``[B, N_ORIENTATIONS]`` and the
        blob field ``[B, N]`` it lies on.

        The paper's reading of Figure 8 is that larger models encode broader context in a form a linear
        classifier can use, so removing the local (low-CDS) features costs them less.  The planted family's
        larger sizes plant exactly that: beside the hashed context, normal tokens carry a mix of
        ``N_ORIENTATIONS`` semantic atoms weighted by the view's excess texture energy per orientation (the
        scenes' classes differ in orientation, so the mix says the view's dominant class), on a blob field that
        moves with the view like the hashed context's, so the features an SAE learns for it are high-CDS.
        """
        excess = stats[:, 3:3 + N_ORIENTATIONS].clamp(min=0)
        weights = excess / excess.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return weights, self._blobs(self._view_field(stats, self._context_waves, self._semantic_phase_weights), mask)

    def truth(self, pixels: torch.Tensor) -> PlantedTruth:
        """The planted decomposition of the tokens of ``pixels`` ``[B, 3, S, S]`` (float, [0, 1])."""
        self._check_pixels(pixels)
        patches = self._patches(pixels)
        energy = self._texture_energy(patches)
        stats = self._view_stats(patches, energy)
        mask = self._outlier_mask(stats)
        patch_codes = torch.cat([self._local_codes(patches, energy).float(), self._fine_codes(patches).float()], dim=-1)
        local_codes = patch_codes * torch.where(mask, self.outlier_local_share, 1.0)[..., None].float()
        global_codes = self._global_codes(stats).float()
        local_part = local_codes @ self._local_atoms
        # the outlier norm varies with the view (as in trained ViTs), mostly along the shared atom
        magnitude = (0.6 + 0.8 * torch.sigmoid(2.0 * self._context_stats(stats) @ self._magnitude_weights)).float()[:, None]
        global_vector = self.global_norm * magnitude * (global_codes @ self._global_atoms)  # [B, D]
        global_part = mask[..., None].float() * global_vector[:, None, :]
        chosen, amplitude = self._context(stats, mask)
        amplitude = amplitude.float()
        context_part = CONTEXT_NORM * torch.einsum("bkn,bkd->bnd", amplitude, self._context_atoms[chosen])
        semantic_codes = torch.zeros(len(stats), N_ORIENTATIONS)
        if self.semantic_context > 0:
            semantic_codes, semantic_field = (t.float() for t in self._semantic(stats, mask))
            context_part = context_part + self.semantic_context * semantic_field[..., None] * (
                semantic_codes @ self._semantic_atoms)[:, None, :]
        device = pixels.device
        return PlantedTruth(outlier_mask=mask.to(device), local_basis=self._local_span.to(device),
                            global_basis=self._global_basis.to(device), local_part=local_part.to(device),
                            global_part=global_part.to(device), patch_codes=patch_codes.to(device),
                            local_codes=local_codes.to(device),
                            global_codes=global_codes.to(device), context_part=context_part.to(device),
                            context_choice=chosen.to(device), context_amplitude=amplitude.to(device),
                            semantic_codes=semantic_codes.to(device))

    # -- attention ---------------------------------------------------------------------

    def _attention(self, local_part: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, H, P+N, P+N]`` attention probabilities (prefix first)."""
        b, n, _ = local_part.shape
        heads, prefix = self.spec.n_heads, self.spec.n_prefix
        rows, cols = self.grid.rows, self.grid.cols
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        pos = torch.stack([r.reshape(-1), c.reshape(-1)], dim=-1).float()
        dist2 = torch.cdist(pos, pos) ** 2  # [N, N]
        unit = F.normalize(local_part, dim=-1)
        similarity = unit @ unit.transpose(1, 2)  # [B, N, N]
        width = self._head_widths.view(1, heads, 1, 1)
        content = self._head_content.view(1, heads, 1, 1)
        # a pull toward the view centre, in absolute grid coordinates: the one signal of a normal
        # query's attention that changes when the same content sits elsewhere in the view
        centre = torch.tensor([(rows - 1) / 2, (cols - 1) / 2])
        to_centre = ((pos - centre) ** 2).sum(-1) / (2 * (rows / 2) ** 2)  # [N] keys
        local_logits = (-dist2 / (2 * width**2) + content * similarity[:, None]
                        - POSITION_BIAS * to_centre.view(1, 1, 1, n))  # [B, H, N, N]
        outlier_key = mask[:, None, None, :].float()  # [B, 1, 1, N]
        broad_logits = 3.0 * outlier_key.expand(b, heads, n, n)
        query_is_outlier = mask[:, None, :, None]
        patch_logits = torch.where(query_is_outlier, broad_logits, local_logits)
        # patch queries put a small fixed logit on prefix keys; prefix queries look at
        # all patches, mostly at the outliers, and a little at the prefix tokens
        logits = torch.full((b, heads, prefix + n, prefix + n), -2.0)
        logits[:, :, prefix:, prefix:] = patch_logits
        logits[:, :, :prefix, prefix:] = 2.0 * outlier_key.expand(b, heads, prefix, n)
        logits[:, :, :prefix, :prefix] = 0.0
        return torch.softmax(logits, dim=-1)

    def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
        truth = self.truth(pixels)
        tokens = truth.local_part + truth.context_part + truth.global_part
        global_vector = self.global_norm * (truth.global_codes @ self._global_atoms.to(pixels.device))
        prefix_token = truth.local_part.mean(1) + global_vector  # CLS-like summary of the view
        prefix = prefix_token[:, None, :].expand(-1, self.spec.n_prefix, -1).contiguous()
        attn = None
        if attention:  # content similarity is that of the detector responses (colour, gratings, contrast)
            detectors = truth.local_codes[..., :N_LOCAL].cpu() @ self._local_basis.T
            attn = self._attention(detectors, truth.outlier_mask.cpu()).to(pixels.device)
        return LayerOutput(tokens=tokens, prefix=prefix, grid=self.grid, attention=attn)


def load_planted_backbone(spec: BackboneSpec, path: Path | None, seed: int, device: str) -> PlantedBackbone:
    """The ``planted`` source's loader: built from its seed (``path`` is always None)."""
    return PlantedBackbone(spec, seed=seed)
