"""One bench session's artefacts, built lazily and once: backbone -> tokens -> SAE -> analyses.

The workbench is the only place that wires the stages together (DESIGN.md's one-way data
flow). Each method memoises its result for the session; tokens live in the activation
store and trained SAEs in a checkpoint folder under it, so a second session reuses both
without a forward pass or a training step. Anything that cannot be had on this machine
(weights, a dataset) raises :class:`Unavailable`, which the bench turns into a skip.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from scopebench.attention import AttentionEMDAccumulator
from scopebench.awcds import awcds_by_norm_percentile, token_awcds
from scopebench.backbones import WeightsNotFound, get_spec, load_backbone
from scopebench.backbones.base import Backbone
from scopebench.benchconfig import BenchScale, scale_for
from scopebench.cache import ActivationStore
from scopebench.cds import CDSResult, compute_cds
from scopebench.data.base import ImageDataset
from scopebench.datasets import DatasetUnavailable, bench_dataset
from scopebench.device import resolve_device
from scopebench.extract import Activations, SCCActivations, extract_scc_tokens, extract_tokens
from scopebench.metrics import ReconstructionMetrics, reconstruction_metrics
from scopebench.outliers import resolve_tau, token_norms
from scopebench.partition import Partition, partition, resolve_gamma
from scopebench.removal_probes import SPLITS, ProbeInputs, classification_metrics, dense_metrics
from scopebench.sae import SparseAutoencoder, load_recipe, load_sae, train_sae
from scopebench.sae.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_native, weights_sha256
from scopebench.sae.training import LOSS_LOG_FILE, SAE_DIR, TRAINER_VERSION
from scopebench.scc import scc

T = TypeVar("T")
_MEMO_FILE = "memo.json"


class Unavailable(Exception):
    """A case needs something this machine lacks (weights, a dataset); the message says how to provide it."""


@dataclass(frozen=True)
class AttentionEMDResult:
    shift: int
    outlier: float
    non_outlier: float
    n_outlier: int
    n_non_outlier: int
    tau: float
    n_images: int


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Workbench:
    def __init__(self, store: ActivationStore, *, device: str = "auto",
                 weights_map: Mapping[str, Path] | None = None, data_root: Path | None = None,
                 external_saes: Mapping[str, Path] | None = None, progress: bool = True,
                 scales: Mapping[str, BenchScale] | None = None, propagate: bool = False) -> None:
        self.store = store
        self.propagate = propagate  # probes read tokens after the remaining blocks, not at the SAE layer
        self.device = resolve_device(device)
        self.weights_map = dict(weights_map or {})
        self.data_root = data_root
        self.external_saes = dict(external_saes or {})
        self.progress = progress
        self._scales = dict(scales or {})
        self._memo: dict[tuple, Any] = {}

    # ------------------------------------------------------------------ plumbing
    def _once(self, key: tuple, build: Callable[[], T]) -> T:
        """Memoise ``build()`` under ``key``; an :class:`Unavailable` is memoised too, so skips stay instant."""
        if key not in self._memo:
            try:
                self._memo[key] = build()
            except Unavailable as err:
                self._memo[key] = err
        found = self._memo[key]
        if isinstance(found, Unavailable):
            raise found
        return found

    def scale(self, backbone: str) -> BenchScale:
        return self._scales.get(backbone) or scale_for(backbone)

    @property
    def sae_dir(self) -> Path:
        return self.store.root / "saes"

    @property
    def analysis_dir(self) -> Path:
        return self.store.root / "analyses"

    # ------------------------------------------------------------------ inputs
    def backbone(self, name: str) -> Backbone:
        def build() -> Backbone:
            try:
                return load_backbone(name, weights_map=self.weights_map, device=str(self.device))
            except WeightsNotFound as err:
                raise Unavailable(str(err)) from None
        return self._once(("backbone", name), build)

    def dataset(self, backbone: str, purpose: str) -> ImageDataset:
        """Images for one stage (``train``, ``eval``, ``scc``, ``probe-train`` ...) of one backbone."""
        def build() -> ImageDataset:
            try:
                return bench_dataset(get_spec(backbone), purpose, self.scale(backbone), self.data_root)
            except DatasetUnavailable as err:
                raise Unavailable(str(err)) from None
        return self._once(("dataset", backbone, purpose), build)

    def tokens(self, backbone: str, purpose: str) -> Activations:
        """Tokens of ``purpose``'s images; for "train", only the scale's ``train_patches_per_image`` per image."""
        model = self.backbone(backbone)  # weights first: a missing file skips before any data work
        data = self.dataset(backbone, purpose)
        scale = self.scale(backbone)
        patches = scale.train_patches_per_image if purpose == "train" else None
        return self._once(("tokens", backbone, purpose), lambda: extract_tokens(
            model, data, self.store, batch_size=scale.batch_size, device=self.device, progress=self.progress,
            patches_per_image=patches, sample_seed=0))

    def scc_tokens(self, backbone: str, shift: int) -> SCCActivations:
        model = self.backbone(backbone)
        data = self.dataset(backbone, "scc")
        return self._once(("scc", backbone, shift), lambda: extract_scc_tokens(
            model, data, self.store, shift, batch_size=self.scale(backbone).batch_size, device=self.device,
            progress=self.progress))

    # ------------------------------------------------------------------ SAEs
    def sae(self, backbone: str, name: str) -> SparseAutoencoder:
        """A baseline recipe trained on this backbone's tokens, or an external checkpoint (``--sae``)."""
        return self._once(("sae", backbone, name), lambda: self._build_sae(backbone, name))

    def sae_config(self, backbone: str, name: str) -> dict[str, Any]:
        return dict(self.sae(backbone, name).config)

    def sae_identity(self, backbone: str, name: str) -> dict[str, Any]:
        """The ``claim_report.measure`` keywords that pin this SAE: its config and a hash of its weights.

        A result file then never mixes two models evaluated under the same name.
        """
        digest = self._once(("sae-sha256", backbone, name), lambda: weights_sha256(self.sae(backbone, name)))
        return {"sae_config": self.sae_config(backbone, name), "sae_checkpoint_sha256": digest}

    def _build_sae(self, backbone: str, name: str) -> SparseAutoencoder:
        spec = get_spec(backbone)
        self.backbone(backbone)
        external = self.external_saes.get(f"{backbone}/{name}") or self.external_saes.get(name)
        if external is not None:
            return load_sae(external, expected_d_in=spec.embed_dim)
        recipe = load_recipe(name)
        scale = self.scale(backbone)
        if scale.sae_overrides:
            recipe = recipe.model_validate({**recipe.model_dump(), **scale.sae_overrides})
        tokens = self.tokens(backbone, "train")
        # a sealed folder <root>/saes/<sha256 of this key>/ (names are recorded in its seal, never in the path)
        key = {"backbone": backbone, "name": name, "tokens": tokens.key.digest,
               "recipe": recipe.model_dump(mode="json"), "trainer": TRAINER_VERSION}
        config = recipe.sae_config(int(tokens.tokens.shape[-1]))
        info = {"backbone": backbone, "name": name, "dataset": tokens.key.dataset,
                "shape": f"{config['d_in']}x{config['d_sae']}"}
        with self.store.artefact("sae", key, info=info) as slot:
            if slot.sealed:  # every file matched its sha256
                try:
                    sae = load_native(slot.path / SAE_DIR)
                except (ValueError, KeyError, TypeError) as err:
                    raise slot.corrupted(SAE_DIR, f"sealed checkpoint cannot be loaded ({err})") from None
            else:  # nothing there, or a run that stopped before sealing: train (resuming its state), then seal
                sae = train_sae(recipe, tokens.tokens, seed=0, device=str(self.device), checkpoint_dir=slot.path,
                                progress=self.progress).sae
                slot.seal([f"{SAE_DIR}/{CONFIG_FILE}", f"{SAE_DIR}/{WEIGHTS_FILE}", LOSS_LOG_FILE])
        return sae.to(self.device).eval()

    # ------------------------------------------------------------------ analyses
    def tau(self, backbone: str) -> float:
        def build() -> float:
            norms = token_norms(self.tokens(backbone, "eval").tokens).ravel()
            return resolve_tau(get_spec(backbone).tau, norms)
        return self._once(("tau", backbone), build)

    def reconstruction(self, backbone: str, sae_name: str) -> ReconstructionMetrics:
        def build() -> ReconstructionMetrics:
            sae, tau = self.sae(backbone, sae_name), self.tau(backbone)
            acts = self.tokens(backbone, "eval")

            def batches():
                for _, block in acts.iter_batches(64):
                    x = torch.from_numpy(np.array(block, dtype=np.float32)).reshape(-1, block.shape[-1])
                    yield x, x.norm(dim=-1) > tau
            return reconstruction_metrics(sae, batches(), device=self.device)
        return self._once(("recon", backbone, sae_name), build)

    def cds(self, backbone: str, sae_name: str) -> CDSResult:
        def build() -> CDSResult:
            scale = self.scale(backbone)
            pair = self.scc_tokens(backbone, scale.cds_shift)
            return compute_cds(self.sae(backbone, sae_name), pair.tokens_a, pair.tokens_b, pair.overlap,
                               k=scale.cds_k, device=self.device, progress=self.progress)
        return self._once(("cds", backbone, sae_name), build)

    def partition(self, backbone: str, sae_name: str) -> Partition:
        def build() -> Partition:
            cds = self.cds(backbone, sae_name).cds
            return partition(cds, resolve_gamma(get_spec(backbone).gamma, cds))
        return self._once(("partition", backbone, sae_name), build)

    def awcds_table(self, backbone: str, sae_name: str):
        """awCDS per token-norm percentile bin over the CDS images (supplement D.1: "the same set of 1,000 images")."""
        def build():
            per_token = token_awcds(self.sae(backbone, sae_name), self.tokens(backbone, "scc").tokens,
                                    self.cds(backbone, sae_name).cds, device=self.device, progress=self.progress)
            return awcds_by_norm_percentile(per_token.norms, per_token.awcds)
        return self._once(("awcds", backbone, sae_name), build)

    def attention_emd(self, backbone: str, shift: int) -> AttentionEMDResult:
        """Mean attention-map EMD of outlier / non-outlier queries under SCC(shift) (Tables 7, 9).

        Attention maps are too large to cache at real scale ([H, N, N] per view), so they
        are streamed from the backbone into the accumulator; the small result is persisted.
        """
        return self._once(("attn", backbone, shift), lambda: self._attention_emd(backbone, shift))

    def _attention_emd(self, backbone: str, shift: int) -> AttentionEMDResult:
        model, scale = self.backbone(backbone), self.scale(backbone)
        data, tau = self.dataset(backbone, "attention"), self.tau(backbone)
        spec = model.spec
        key = {"backbone": backbone, "weights": model.weights_id, "layer": spec.layer, "data": data.identity,
               "shift": shift, "tau": tau, "method": scale.attention_emd_method, "version": 1}
        info = {"backbone": backbone, "name": "attention-emd", "dataset": data.identity, "shape": f"s={shift}"}
        # a sealed folder <root>/analyses/<sha256 of key>/memo.json: an altered memo is refused, an unsealed one redone
        with self.store.artefact("memo", {"analysis": "attention-emd", **key}, info=info) as slot:
            if slot.sealed:
                stored = slot.read_json(_MEMO_FILE)
                try:
                    return AttentionEMDResult(**stored["result"])
                except (KeyError, TypeError) as err:
                    raise slot.corrupted(_MEMO_FILE, f"not an attention-EMD result ({type(err).__name__}: {err})"
                                         ) from None
            found = self._compute_attention_emd(backbone, shift, model, data, tau)
            slot.write_json(_MEMO_FILE, {"key": key, "result": found.__dict__})
            slot.seal([_MEMO_FILE])
        return found

    def _compute_attention_emd(self, backbone: str, shift: int, model: Backbone, data: ImageDataset,
                               tau: float) -> AttentionEMDResult:
        scale = self.scale(backbone)
        spec, pre = model.spec, model.preprocess
        n = min(scale.attention_images, len(data))
        accumulator = None
        batch = max(1, min(scale.batch_size, 16))
        for start in tqdm(range(0, n, batch), desc=f"attention EMD s={shift}", disable=not self.progress):
            images = [data[i].image for i in range(start, min(start + batch, n))]
            pairs = [scc(image, shift, patch_size=spec.patch_size, grid_side=spec.grid_side,
                         interpolation=pre.interpolation) for image in images]
            if accumulator is None:
                accumulator = AttentionEMDAccumulator(pairs[0].overlap, spec.n_prefix,
                                                      method=scale.attention_emd_method)
            with torch.inference_mode():
                out_a = model.forward_layer(torch.stack([p.view_a for p in pairs]).to(self.device), attention=True)
                out_b = model.forward_layer(torch.stack([p.view_b for p in pairs]).to(self.device), attention=True)
            mask = (out_a.tokens.float().norm(dim=-1) > tau).cpu()
            accumulator.update(out_a.attention.cpu(), out_b.attention.cpu(), mask)
        result = accumulator.result()
        found = AttentionEMDResult(shift=shift, outlier=float(result.mean_outlier),
                                   non_outlier=float(result.mean_non_outlier),
                                   n_outlier=int(result.counts["outlier"]),
                                   n_non_outlier=int(result.counts["non_outlier"]), tau=tau, n_images=n)
        return found

    # ------------------------------------------------------------------ removal probes
    def probe_inputs(self, backbone: str, task: str) -> dict[str, ProbeInputs]:
        out = {}
        for split in SPLITS:
            acts = self.tokens(backbone, f"probe-{task}-{split}")
            out[split] = ProbeInputs(tokens=acts.tokens, prefix=acts.prefix,
                                     dataset=self.dataset(backbone, f"probe-{task}-{split}"))
        return out

    def probes(self, backbone: str, sae_name: str, task: str) -> dict[str, float]:
        """Probe metrics of ``task`` (cls / seg / depth) on original, high-removed and low-removed tokens."""
        def build() -> dict[str, float]:
            spec, scale = get_spec(backbone), self.scale(backbone)
            inputs = self.probe_inputs(backbone, task)
            sae, groups = self.sae(backbone, sae_name), self.partition(backbone, sae_name)
            propagate = self._propagation(backbone)
            if task == "cls":
                return classification_metrics(sae, groups, inputs, config=scale.classification,
                                              device=self.device, progress=self.progress, propagate=propagate)
            config = scale.segmentation if task == "seg" else scale.depth
            return dense_metrics(task, sae, groups, inputs, target_size=scale.dense_target_size or spec.image_size,
                                 has_cls=spec.has_cls, config=config, device=self.device, progress=self.progress,
                                 propagate=propagate)
        return self._once(("probes", backbone, sae_name, task, self.propagate), build)

    def _propagation(self, backbone: str):
        """The backbone's ``propagate`` when propagation is on, else None."""
        if not self.propagate:
            return None
        propagate = getattr(self.backbone(backbone), "propagate", None)
        if propagate is None:
            raise Unavailable(f"{backbone} has no blocks after its SAE layer to propagate edited tokens through; "
                              "run its removal cases without --propagate")
        return propagate
