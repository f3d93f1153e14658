"""The bench's inputs, built lazily and once, and one entry that runs any analysis on them.

Inputs: backbone, dataset (per stage), tokens, SCC tokens, tau, SAE. ``run(analysis, backbone,
sae)`` computes one analysis of ``scopebench.analyses`` with this backbone's scale config and
memoises its output for the session; ``persisted`` keeps an expensive piece across sessions
as a sealed memo in the activation store. Tokens live in the activation store and trained
SAEs in sealed folders under it, so a second session reuses both without a forward pass or a
training step. Anything that cannot be had on this machine (weights, a dataset) raises
:class:`Unavailable`, which the bench turns into a skip.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from scopebench import distributed
from scopebench.analyses import AnalysisConfig, AnalysisOutput, Unavailable, get_analysis
from scopebench.backbones import WeightsNotFound, get_spec, load_backbone
from scopebench.backbones.base import Backbone
from scopebench.suite.scales import BenchScale, scale_for
from scopebench.pipeline.cache import ActivationStore, ArtefactSlot
from scopebench.data.base import ImageDataset
from scopebench.suite.stages import DatasetUnavailable, bench_dataset
from scopebench.device import resolve_device
from scopebench.pipeline.extract import Activations, SCCActivations, extract_scc_tokens, extract_tokens
from scopebench.pipeline.loader import check_workers
from scopebench.precision import DEFAULT_PRECISION, check_precision
from scopebench.analyses.outliers import resolve_tau, token_norms
from scopebench.results.records import AnalysisRecord, AnalysisResult, BackboneInfo, DatasetInfo, SAEInfo, output_json
from scopebench.sae import SparseAutoencoder, load_recipe, load_sae, train_sae
from scopebench.sae.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_native, weights_sha256
from scopebench.sae.training import LOSS_LOG_FILE, SAE_DIR, TRAINER_VERSION

T = TypeVar("T")
_MEMO_FILE = "memo.json"

__all__ = ["Unavailable", "Workbench"]


def _memo_of(slot: ArtefactSlot, model: type[BaseModel]) -> Any:
    """The result in a sealed memo, refused (CacheCorrupted) when it is not a ``model``."""
    stored = slot.read_json(_MEMO_FILE)
    try:
        return model.model_validate(stored["result"])
    except (KeyError, TypeError, ValidationError) as err:
        raise slot.corrupted(_MEMO_FILE, f"not a {model.__name__} ({type(err).__name__}: {err})") from None


class Workbench:
    def __init__(self, store: ActivationStore, *, device: str = "auto",
                 weights_map: Mapping[str, Path] | None = None, data_root: Path | None = None,
                 external_saes: Mapping[str, Path] | None = None, progress: bool = True,
                 scales: Mapping[str, BenchScale] | None = None, propagate: bool = False, seed: int = 0,
                 workers: int = 0, precision: str = DEFAULT_PRECISION) -> None:
        self.store = store
        self.workers = check_workers(workers)  # image-loading processes of every forward loop (0: in this process)
        self.precision = check_precision(precision)  # of every backbone forward (fp32: the paper's)
        self.seed = seed  # baseline SAE training seed
        self.propagate = propagate  # removal probes: run edited tokens through the remaining blocks
        self.device = resolve_device(device)
        self.weights_map = dict(weights_map or {})
        self.data_root = data_root
        self.external_saes = dict(external_saes or {})
        self.progress = progress
        self._scales = dict(scales or {})
        self._memo: dict[tuple, Any] = {}
        self._training_keys: dict[tuple[str, str], str] = {}  # (backbone, recipe) -> its training key digest

    # ------------------------------------------------------------------ plumbing
    def once(self, key: tuple, build: Callable[[], T]) -> T:
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

    def config(self, analysis: str, backbone: str) -> AnalysisConfig:
        """The config ``analysis`` runs with on ``backbone``: its scale's, with this session's options."""
        config = self.scale(backbone).analysis(analysis)
        if analysis == "removal_probes" and self.propagate:
            config = config.model_copy(update={"propagate": True})
        return config

    def persisted(self, key: dict[str, Any], model: type[BaseModel], build: Callable[[], BaseModel]) -> Any:
        """``build()`` once per ``key`` across sessions: a sealed memo in the activation store.

        An altered memo is refused (its seal does not match), an unsealed one (a crash before
        sealing) is computed again.
        """
        info = {"backbone": key.get("backbone"), "name": key.get("analysis"), "dataset": key.get("data"),
                "shape": f"s={key['shift']}" if "shift" in key else ""}
        if distributed.world_size() > 1:
            return self._persisted_by_ranks(key, info, model, build)
        with self.store.artefact("memo", key, info=info) as slot:
            if slot.sealed:
                return _memo_of(slot, model)
            found = build()
            slot.write_json(_MEMO_FILE, {"key": key, "result": found.model_dump(mode="json")})
            slot.seal([_MEMO_FILE])
        return found

    def _persisted_by_ranks(self, key: dict[str, Any], info: dict[str, Any], model: type[BaseModel],
                            build: Callable[[], BaseModel]) -> Any:
        """:meth:`persisted` under torchrun: every rank builds its share, rank 0 alone reads and writes the memo.

        The memo's lock is held only by rank 0 and only to read or write it, never while the
        ranks build together (the others would wait on it for ever).
        """
        what = f"memo of {key.get('analysis')} {key.get('backbone')}"

        def stored() -> dict[str, Any] | None:
            with self.store.artefact("memo", key, info=info) as slot:
                return _memo_of(slot, model).model_dump(mode="json") if slot.sealed else None

        found = distributed.from_main(stored, what)
        if found is not None:
            return model.model_validate(found)
        with distributed.together(what):
            built = build()

        def write() -> None:
            with self.store.artefact("memo", key, info=info) as slot:
                if not slot.sealed:  # another launch may have sealed it meanwhile: the same numbers, keep it
                    slot.write_json(_MEMO_FILE, {"key": key, "result": built.model_dump(mode="json")})
                    slot.seal([_MEMO_FILE])

        distributed.from_main(write, what)
        return built

    # ------------------------------------------------------------------ inputs
    def backbone(self, name: str) -> Backbone:
        def build() -> Backbone:
            try:
                return load_backbone(name, weights_map=self.weights_map, device=str(self.device))
            except WeightsNotFound as err:
                raise Unavailable(str(err)) from None
        return self.once(("backbone", name), build)

    def dataset(self, backbone: str, purpose: str) -> ImageDataset:
        """Images for one stage (``train``, ``eval``, ``scc``, ``probe-train`` ...) of one backbone."""
        def build() -> ImageDataset:
            try:
                return bench_dataset(get_spec(backbone), purpose, self.scale(backbone), self.data_root)
            except DatasetUnavailable as err:
                raise Unavailable(str(err)) from None
        return self.once(("dataset", backbone, purpose), build)

    def tokens(self, backbone: str, purpose: str) -> Activations:
        """Tokens of ``purpose``'s images; for "train", only the scale's ``train_patches_per_image`` per image."""
        model = self.backbone(backbone)  # weights first: a missing file skips before any data work
        data = self.dataset(backbone, purpose)
        scale = self.scale(backbone)
        patches = scale.train_patches_per_image if purpose == "train" else None
        return self.once(("tokens", backbone, purpose), lambda: extract_tokens(
            model, data, self.store, batch_size=scale.batch_size, device=self.device, progress=self.progress,
            patches_per_image=patches, sample_seed=0, workers=self.workers, precision=self.precision))

    def scc_tokens(self, backbone: str, shift: int) -> SCCActivations:
        model = self.backbone(backbone)
        data = self.dataset(backbone, "scc")
        return self.once(("scc", backbone, shift), lambda: extract_scc_tokens(
            model, data, self.store, shift, batch_size=self.scale(backbone).batch_size, device=self.device,
            progress=self.progress, workers=self.workers, precision=self.precision))

    def tau(self, backbone: str) -> float:
        def build() -> float:
            norms = token_norms(self.tokens(backbone, "eval").tokens).ravel()
            return resolve_tau(get_spec(backbone).tau, norms)
        return self.once(("tau", backbone), build)

    # ------------------------------------------------------------------ SAEs
    def sae(self, backbone: str, name: str) -> SparseAutoencoder:
        """A baseline recipe trained on this backbone's tokens, or an external checkpoint (``--sae``)."""
        return self.once(("sae", backbone, name), lambda: self._build_sae(backbone, name))

    def sae_identity(self, backbone: str, name: str) -> dict[str, Any]:
        """What pins this SAE in a result file: its config and a hash of its weights.

        A result file then never mixes two models evaluated under the same name.
        """
        sae = self.sae(backbone, name)
        digest = self.once(("sae-sha256", backbone, name), lambda: weights_sha256(sae))
        return {"config": dict(sae.config), "checkpoint_sha256": digest,
                "training": self._training_keys.get((backbone, name))}

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
               "recipe": recipe.model_dump(mode="json"), "trainer": TRAINER_VERSION, "seed": self.seed}
        self._training_keys[(backbone, name)] = self.store.artefact_path("sae", key).name
        config = recipe.sae_config(int(tokens.tokens.shape[-1]))
        info = {"backbone": backbone, "name": name, "dataset": tokens.key.dataset,
                "shape": f"{config['d_in']}x{config['d_sae']}"}

        def trained() -> SparseAutoencoder:
            with self.store.artefact("sae", key, info=info) as slot:
                if slot.sealed:  # every file matched its sha256
                    try:
                        return load_native(slot.path / SAE_DIR)
                    except (ValueError, KeyError, TypeError) as err:
                        raise slot.corrupted(SAE_DIR, f"sealed checkpoint cannot be loaded ({err})") from None
                # nothing there, or a run that stopped before sealing: train (resuming its state), then seal
                sae = train_sae(recipe, tokens.tokens, seed=self.seed, device=str(self.device),
                                checkpoint_dir=slot.path, progress=self.progress).sae
                slot.seal([f"{SAE_DIR}/{CONFIG_FILE}", f"{SAE_DIR}/{WEIGHTS_FILE}", LOSS_LOG_FILE])
                return sae

        if distributed.world_size() > 1:
            # rank 0 trains (one GPU is enough at paper scale) while the others wait; then they load the
            # sealed checkpoint it wrote
            distributed.from_main(lambda: trained().d_sae, f"training {name} on {backbone}")
        return trained().to(self.device).eval()

    # ------------------------------------------------------------------ analyses
    def run(self, analysis: str, backbone: str, sae: str | None = None, **options: Any) -> AnalysisOutput:
        """The output of ``analysis`` for ``backbone`` (and ``sae`` unless it is a backbone-level analysis).

        ``options`` select part of the work (``tasks=("seg",)`` of the removal probes,
        ``shifts=(1,)`` of attention EMD); they never change a number, only which are computed.
        """
        spec = get_analysis(analysis)
        if (spec.level == "sae") != (sae is not None):
            need = "an SAE name" if spec.level == "sae" else "no SAE (it is a backbone-level analysis)"
            raise ValueError(f"analysis {analysis!r} needs {need}")
        key = ("run", analysis, backbone, sae, tuple(sorted(options.items())))
        return self.once(key, lambda: spec.compute(self, backbone, sae, self.config(analysis, backbone),
                                                    **options))

    def result(self, analysis: str, backbone: str, sae: str | None = None, **options: Any) -> AnalysisResult:
        """:meth:`run`, with everything a result file records beside the output (config, images, SAE pin)."""
        output = self.run(analysis, backbone, sae, **options)
        stage = get_analysis(analysis).stage
        data = self.dataset(backbone, stage) if stage is not None else None
        dataset = None if data is None else DatasetInfo(name=data.identity.split(":", 1)[0], identity=data.identity,
                                                        n_images=len(data))
        return AnalysisResult(
            analysis=analysis, output=output, device=str(self.device),
            backbone=BackboneInfo(name=backbone, weights_id=self.backbone(backbone).weights_id,
                                  precision=self.precision),
            sae=None if sae is None else SAEInfo(name=sae, **self.sae_identity(backbone, sae)),
            record=AnalysisRecord(config=self.config(analysis, backbone).model_dump(mode="json"), dataset=dataset,
                                  output=output_json(output)))
