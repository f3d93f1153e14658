"""The planted backbone: a ViT stand-in whose tokens have known local and global structure.

No pretrained weights exist on our machines, and the paper's phenomena (high-norm
outlier tokens carrying global information, local features that follow content) only
arise in trained models.  This instrument plants them by construction, so every
downstream analysis can be checked against the truth (DESIGN.md, "The planted backbone").

Token of patch ``i`` in a view = ``local_i + context_i + global_i``; the local part lies in one
subspace of a fixed random orthonormal basis of ``R^D``, the context and global parts in the
orthogonal rest:

- ``local_i`` is a fixed function of the patch's own pixels only: non-negative
  responses of a small detector bank (colour sign detectors, oriented grating energies
  at a few frequencies, contrast, and a constant), sparsified to the strongest texture
  responses, each response along its own *local atom* (one basis direction).  Identical
  pixels give identical local parts, so under SCC the overlap's local parts match.
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
- ``context_i`` (v7): normal tokens carry view-level context too, as in trained ViTs: a mix of
  the dominant atom and ``CONTEXT_ATOMS`` other global atoms chosen by the view, carried with
  a weight from a second view-phased field (blobs that move when the view shifts), peak norm
  ``CONTEXT_NORM``.  Features an SAE learns for it are context-dependent (high CDS), though most of
  BatchTopK's high-CDS features on v7 are the outlier code's (README), and a linear classifier
  barely notices it: removing the high-CDS features changes the probe's top-1 by
  -0.10 to -0.05 points on 4,096 test scenes (README, "Fidelity of the planted default"), so v7 does not
  show the classification gain of the paper's Table 3 / Figure 8.

Attention (per head): normal queries attend with a Gaussian in patch distance (width
per head) modulated by local-content similarity and pulled toward the view centre
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

VERSION = "v7"
N_ORIENTATIONS = 8
FREQUENCIES = (0.5, 1.0, 1.5, 2.0, 2.5)  # grating detectors, cycles per patch
N_GLOBAL_ATOMS = 8
N_TEXTURE = N_ORIENTATIONS * len(FREQUENCIES)
N_LOCAL = 6 + N_TEXTURE + 2  # colour signs, texture energies, contrast, constant
OUTLIER_FRACTION = 0.025  # share of patch tokens carrying the global part (5 of 196)
GLOBAL_NORM = 12.0  # norm of the global vector; normal tokens have norm ~1-3
GLOBAL_VARIATION = 0.5  # norm of the view-dependent part of the global mix, relative to the shared atom
TEXTURE_TOP_K = 4  # texture detectors kept per patch
OUTLIER_LOCAL_SHARE = 0.1  # what remains of an outlier position's local part
CONTEXT_NORM = 2.0  # peak norm of the context part normal tokens carry (their local part has norm ~1-2)
CONTEXT_DOMINANT = 1.0  # weight of the dominant (outlier) atom in the context mix, beside the chosen atoms' 1
CONTEXT_ATOMS = 2  # global atoms each view's context part mixes (chosen by the view)
POSITION_BIAS = 1.0  # weight of normal queries' pull toward the view centre (absolute-position signal)


@dataclass
class PlantedTruth:
    """What the planted backbone put into the tokens of a batch of views."""

    outlier_mask: torch.Tensor  # [B, N] bool: patch positions carrying the global part
    local_basis: torch.Tensor  # [D, dl] orthonormal columns spanning the local subspace
    global_basis: torch.Tensor  # [D, dg] orthonormal columns spanning the global subspace
    local_part: torch.Tensor  # [B, N, D]
    global_part: torch.Tensor  # [B, N, D] zero outside the outlier positions
    patch_codes: torch.Tensor  # [B, N, dl] detector responses of each patch alone (non-negative)
    local_codes: torch.Tensor  # [B, N, dl] coefficients on the local atoms: patch_codes, shrunk at outliers
    global_codes: torch.Tensor  # [B, n_global_atoms] non-negative coefficients of each view's global vector
    context_part: torch.Tensor  # [B, N, D] in the global subspace, zero at the outlier positions
    context_codes: torch.Tensor  # [B, n_global_atoms] non-negative coefficients of each view's context vector
    context_amplitude: torch.Tensor  # [B, N] in [0, 1]: how much of the context vector each position carries


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
                 outlier_local_share: float = OUTLIER_LOCAL_SHARE) -> None:
        if spec.source != "planted":
            raise ValueError(f"PlantedBackbone needs a planted spec, got source={spec.source!r} ({spec.name})")
        if spec.embed_dim < N_LOCAL + N_GLOBAL_ATOMS:
            raise ValueError(f"planted spec embed_dim={spec.embed_dim} is too small: need at least "
                             f"{N_LOCAL + N_GLOBAL_ATOMS} ({N_LOCAL} local + {N_GLOBAL_ATOMS} global directions)")
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
        self.preprocess = Preprocess(image_size=spec.image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                     interpolation="bicubic", crop_pct=1.0)

        gen = torch.Generator().manual_seed(seed)
        dim = spec.embed_dim
        basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        self._local_basis = basis[:, :N_LOCAL].float()  # [D, dl]
        self._global_basis = basis[:, N_LOCAL:].float()  # [D, dg]
        mix, _ = torch.linalg.qr(torch.randn(dim - N_LOCAL, N_GLOBAL_ATOMS, generator=gen, dtype=torch.float64))
        self._global_atoms = (self._global_basis.double() @ mix).T.float()  # [n_global, D]
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
        # context field and mix: drawn last, so the draws above are those of v6
        self._context_waves = torch.randint(-3, 4, (4, 2), generator=gen).double()
        self._context_waves[self._context_waves.abs().sum(1) == 0] = 1.0
        self._context_phase_weights = torch.randn(4, n_stats, generator=gen, dtype=torch.float64)
        self._context_mixing = torch.randn(N_GLOBAL_ATOMS - 1, n_stats, generator=gen, dtype=torch.float64)

    @property
    def weights_id(self) -> str:
        """``planted:v7:seed<seed>``, plus any non-default construction knob or geometry (they change the tokens)."""
        knobs = {"frac": (self.outlier_fraction, OUTLIER_FRACTION), "norm": (self.global_norm, GLOBAL_NORM),
                 "topk": (self.texture_top_k, TEXTURE_TOP_K),
                 "olocal": (self.outlier_local_share, OUTLIER_LOCAL_SHARE),
                 "geometry": (self.spec.geometry_id, get_spec("planted").geometry_id)}
        extra = "".join(f":{name}={value}" for name, (value, default) in knobs.items() if value != default)
        return f"planted:{VERSION}:seed{self.seed}{extra}"

    @property
    def local_atoms(self) -> torch.Tensor:
        """``[dl, D]`` unit directions of the local detectors (rows)."""
        return self._local_basis.T.contiguous()

    @property
    def global_atoms(self) -> torch.Tensor:
        """``[n_global_atoms, D]`` unit directions the global vectors are mixed from (rows)."""
        return self._global_atoms.clone()

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

    def _context(self, stats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each view's context mix ``[B, n_global_atoms]`` and where its positions carry it ``[B, N]``.

        Normal tokens of trained ViTs also carry some view-level context; here a view mixes
        ``CONTEXT_ATOMS`` of the non-dominant global atoms (chosen by its brightness and contrast),
        and positions carry it by a second view-phased field: blobs that move when the view shifts,
        so the features an SAE learns for it are context-dependent (high CDS) and a minority.
        """
        scores = self._context_stats(stats) @ self._context_mixing.T  # [B, n_global - 1]
        chosen = scores.topk(CONTEXT_ATOMS, dim=-1).indices
        weights = torch.zeros_like(scores).scatter_(1, chosen, 1.0)
        codes = torch.cat([torch.full_like(scores[:, :1], CONTEXT_DOMINANT), weights], dim=-1)
        codes = codes / codes.norm(dim=-1, keepdim=True)
        field = self._view_field(stats, self._context_waves, self._context_phase_weights).clamp(min=0)
        amplitude = field / field.amax(dim=-1, keepdim=True).clamp(min=1e-12)
        return codes, torch.where(mask, 0.0, amplitude)

    def truth(self, pixels: torch.Tensor) -> PlantedTruth:
        """The planted decomposition of the tokens of ``pixels`` ``[B, 3, S, S]`` (float, [0, 1])."""
        self._check_pixels(pixels)
        patches = self._patches(pixels)
        energy = self._texture_energy(patches)
        stats = self._view_stats(patches, energy)
        mask = self._outlier_mask(stats)
        patch_codes = self._local_codes(patches, energy).float()
        local_codes = patch_codes * torch.where(mask, self.outlier_local_share, 1.0)[..., None].float()
        global_codes = self._global_codes(stats).float()
        local_part = local_codes @ self.local_atoms
        # the outlier norm varies with the view (as in trained ViTs), mostly along the shared atom
        magnitude = (0.6 + 0.8 * torch.sigmoid(2.0 * self._context_stats(stats) @ self._magnitude_weights)).float()[:, None]
        global_vector = self.global_norm * magnitude * (global_codes @ self._global_atoms)  # [B, D]
        global_part = mask[..., None].float() * global_vector[:, None, :]
        context_codes, amplitude = self._context(stats, mask)
        context_codes, amplitude = context_codes.float(), amplitude.float()
        context_part = CONTEXT_NORM * amplitude[..., None] * (context_codes @ self._global_atoms)[:, None, :]
        device = pixels.device
        return PlantedTruth(outlier_mask=mask.to(device), local_basis=self._local_basis.to(device),
                            global_basis=self._global_basis.to(device), local_part=local_part.to(device),
                            global_part=global_part.to(device), patch_codes=patch_codes.to(device),
                            local_codes=local_codes.to(device),
                            global_codes=global_codes.to(device), context_part=context_part.to(device),
                            context_codes=context_codes.to(device), context_amplitude=amplitude.to(device))

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
        if attention:
            attn = self._attention(truth.local_part.cpu(), truth.outlier_mask.cpu()).to(pixels.device)
        return LayerOutput(tokens=tokens, prefix=prefix, grid=self.grid, attention=attn)


def load_planted_backbone(spec: BackboneSpec, path: Path | None, seed: int, device: str) -> PlantedBackbone:
    """The ``planted`` source's loader: built from its seed (``path`` is always None)."""
    return PlantedBackbone(spec, seed=seed)
