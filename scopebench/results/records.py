"""Result records (schema v2): one validated JSON file per (backbone, SAE), plus one per backbone.

A record is keyed by analysis: ``analyses.<name> = {config, dataset, output}``, the output
being that analysis's typed output model (``scopebench.analyses``). Analyses that need no
SAE (attention EMD) live in the backbone-level record ``<backbone>.json`` (``sae: null``).
A bench session fills in only the analyses it ran; :func:`merge_results` folds it into the
file already on disk so earlier analyses survive. Version 1 files (keyed by paper table)
are upgraded when read. The schema is documented in ``docs/results-schema.md``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import os
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Optional

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scopebench.analyses import ANALYSES, AnalysisOutput, quantity_catalogue
from scopebench.atomic import write_text_atomic
from scopebench.keys import base_name, index_of
from scopebench.names import check_name

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 files are upgraded when read (upgrade_v1)

Measurement = Optional[float]  # None stands for NaN / not computable


class BackboneInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    weights_id: Optional[str] = None  # e.g. HF repo + file, or the sha256 of a local weights file
    # of the forward pass that made the tokens (scopebench.precision); files written before the option are fp32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


class SAEInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    config: dict[str, Any] = Field(default_factory=dict)
    checkpoint_sha256: Optional[str] = None
    # a baseline the bench trained: the digest of what it was trained from (recipe, tokens, seed, trainer);
    # null for a checkpoint. Retraining it on another CPU gives other weights bits but the same model.
    training: Optional[str] = None

    @property
    def architecture(self) -> str | None:
        """The SAE architecture its config names (``batchtopk``, ...), None if it names none."""
        value = self.config.get("architecture")
        return value if isinstance(value, str) else None


class DatasetInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    identity: str  # split + seed, file-list hash, ...: whatever pins the exact images
    n_images: Optional[int] = None
    n_tokens: Optional[int] = None


class AnalysisRecord(BaseModel):
    """One analysis of a record: the config that produced its numbers, the images, the output."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(default_factory=dict)  # the analysis config ({} in files upgraded from v1)
    dataset: Optional[DatasetInfo] = None
    output: dict[str, Any]  # the analysis output model, as JSON (NaN -> null)


class ClaimVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: bool
    detail: str
    source: str
    measured: dict[str, Measurement]
    paper: dict[str, float] = Field(default_factory=dict)
    asserted: bool = True  # False: scored in leaderboard mode (an SAE other than the one under test), not asserted
    # how far from failing, in the unit of the claim's first quantity (scopebench.claims.registry); None: NaN, or
    # a file written before margins were recorded
    margin: Measurement = None

    @field_validator("measured", mode="before")
    @classmethod
    def _nan_to_none(cls, value: Any) -> Any:
        return _clean_values(value)

    @field_validator("margin", mode="before")
    @classmethod
    def _nan_margin(cls, value: Any) -> Any:
        return _clean_values({"margin": value})["margin"]


class Environment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    python: str
    torch: Optional[str] = None
    timm: Optional[str] = None
    open_clip: Optional[str] = None
    scopebench: Optional[str] = None
    git_commit: Optional[str] = None
    device: str
    date_utc: str


class ResultRecord(BaseModel):
    """One (backbone, SAE) record, or with ``sae`` null the backbone-level record (analyses that need no SAE)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = SCHEMA_VERSION
    backbone: BackboneInfo
    sae: Optional[SAEInfo] = None
    analyses: dict[str, AnalysisRecord] = Field(default_factory=dict)
    claims: dict[str, ClaimVerdict] = Field(default_factory=dict)  # claim id -> verdict
    environment: Environment
    upgraded_from: Optional[int] = None  # schema version of the file this record was read from, when older

    @property
    def sae_architecture(self) -> str | None:
        """The architecture of the record's SAE; None for the backbone-level record."""
        return self.sae.architecture if self.sae else None

    @model_validator(mode="after")
    def _outputs_fit_their_analyses(self) -> ResultRecord:
        level = "backbone" if self.sae is None else "sae"
        for name, record in self.analyses.items():
            analysis = ANALYSES.get(name)
            if analysis is None:
                raise ValueError(f"analyses.{name}: unknown analysis; known: {', '.join(ANALYSES)}")
            if analysis.level != level:
                where = "the backbone-level record (sae: null)" if analysis.level == "backbone" else "an SAE record"
                raise ValueError(f"analyses.{name}: this analysis belongs in {where}")
            try:
                analysis.output.model_validate(record.output)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"analyses.{name}.output does not fit the {name} output model ({problems})") from None
        return self

    def output(self, analysis: str) -> AnalysisOutput | None:
        """The typed output of ``analysis``, or None when this record has none."""
        record = self.analyses.get(analysis)
        return None if record is None else ANALYSES[analysis].output.model_validate(record.output)

    @property
    def label(self) -> str:
        return f"{self.backbone.name}/{self.sae.name if self.sae else '(backbone)'}"


@dataclass(frozen=True)
class AnalysisResult:
    """One analysis output with what its result file records beside it (from ``Workbench.result``)."""

    analysis: str
    backbone: BackboneInfo
    sae: SAEInfo | None  # None: a backbone-level analysis
    record: AnalysisRecord
    output: AnalysisOutput
    device: str

    @property
    def sae_architecture(self) -> str | None:
        """The architecture of the result's SAE; None for a backbone-level analysis."""
        return self.sae.architecture if self.sae else None


def output_json(output: AnalysisOutput) -> dict[str, Any]:
    """An output as plain JSON values; NaN becomes null (JSON has no NaN), infinities are refused."""
    raw = output.model_dump(mode="python")

    def clean(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(f"{key}.{k}", v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if isinstance(value, float):
            if math.isinf(value):
                raise ValueError(f"{key} is infinite; record NaN (None) for a value that cannot be computed")
            return None if math.isnan(value) else value
        return value
    return json.loads(json.dumps({k: clean(k, v) for k, v in raw.items()}))


def _clean_values(values: Any) -> Any:
    """NaN -> None (JSON has no NaN); infinities are refused since they mean a broken metric."""
    if not isinstance(values, dict):
        return values
    cleaned = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                value = None
            elif math.isinf(value):
                raise ValueError(f"{key} is infinite; record NaN (None) for a value that cannot be computed")
            else:
                value = float(value)
        cleaned[key] = value
    return cleaned


class TakenName(ValueError):
    """A result of another model (other weights or config) under a name that already has a file."""


class ResultFileError(ValueError):
    """A result file that is missing, not JSON, or does not match the schema."""


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(cwd: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def collect_environment(device: str = "cpu", repo_dir: Path | None = None) -> Environment:
    """Versions, commit and time of the run that produced a record."""
    return Environment(
        python=platform.python_version(),
        torch=_version("torch"),
        timm=_version("timm"),
        open_clip=_version("open_clip_torch"),
        scopebench=_version("scopebench"),
        git_commit=_git_commit(repo_dir or Path(__file__).resolve().parent),
        device=device,
        date_utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def result_path(results_dir: Path, backbone: str, sae: str | None) -> Path:
    """``<results_dir>/<backbone>__<sae>.json``, or ``<backbone>.json`` for the backbone-level record.

    Both names follow :mod:`scopebench.names` (never cleaned, so two names cannot share a file and
    none can leave ``results_dir``).
    """
    check_name(backbone, "backbone name")
    if sae is None:
        return Path(results_dir) / f"{backbone}.json"
    check_name(sae, "SAE name")
    return Path(results_dir) / f"{backbone}__{sae}.json"


def write_result(record: ResultRecord, path: Path) -> None:
    text = json.dumps(record.model_dump(mode="json", exclude={"upgraded_from"}), indent=2, sort_keys=True,
                      allow_nan=False)
    write_text_atomic(path, text + "\n")


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"field '{'.'.join(str(p) for p in err['loc']) or '<root>'}': {err['msg']}" for err in exc.errors())


def upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 payload (measurements keyed by paper table) as a schema-2 one (keyed by analysis).

    Each quantity goes to the analysis whose output defines it; a v1 record of the fake SAE "-"
    (attention EMD) becomes the backbone-level record. v1 files did not record analysis configs,
    so those stay empty; v1 definitions that are outputs now (gamma, tau, FVU normalisation) move there.
    """
    catalogue = quantity_catalogue()
    sae = raw.get("sae")
    backbone_level = isinstance(sae, dict) and sae.get("name") == "-"
    outputs: dict[str, dict[str, Any]] = {}
    datasets: dict[str, Any] = {}
    for table, values in (raw.get("measurements") or {}).items():
        for key, value in (values or {}).items():
            info = catalogue.get(base_name(key))
            if info is None:
                raise ValueError(f"measurements.{table}.{key}: not a quantity of any analysis")
            target = outputs.setdefault(info.analysis, {})
            found = index_of(key)
            if found is not None:
                field = {"attn_emd_out": "outlier", "attn_emd_non": "non_outlier"}[found[0]]
                target.setdefault("per_shift", {}).setdefault(str(found[2]), {})[field] = value
            else:
                target.setdefault(key, value)
            if table in (raw.get("datasets") or {}):
                datasets.setdefault(info.analysis, raw["datasets"][table])
    definitions = raw.get("definitions") or {}
    if "reconstruction" in outputs:
        if definitions.get("tau_value") is not None:
            outputs["reconstruction"].setdefault("tau", definitions["tau_value"])
        if definitions.get("fvu_normalisation"):
            outputs["reconstruction"]["fvu_normalisation"] = definitions["fvu_normalisation"]
    configs = {"cds": {k: definitions[f"cds_{k}"] for k in ("k", "shift") if definitions.get(f"cds_{k}") is not None}}
    for shifts in (o.get("per_shift", {}) for o in outputs.values()):
        for emd in shifts.values():
            emd.setdefault("n_outlier", 0)
            emd.setdefault("n_non_outlier", 0)
    return {
        "schema_version": 2, "backbone": raw.get("backbone"), "sae": None if backbone_level else sae,
        "analyses": {name: {"config": configs.get(name, {}), "dataset": datasets.get(name), "output": output}
                     for name, output in outputs.items()},
        "claims": {cid: _upgrade_verdict(v) for cid, v in (raw.get("claims") or {}).items()},
        "environment": raw.get("environment"), "upgraded_from": 1,
    }


def _upgrade_verdict(verdict: Any) -> Any:
    """v1 verdicts named an ``exemption`` (the SAE was not expected to hold the claim): now a scored verdict."""
    if not isinstance(verdict, dict) or "exemption" not in verdict:
        return verdict
    verdict = dict(verdict)
    asserted = verdict.pop("exemption") is None
    return {**verdict, "asserted": asserted}


def load_result(path: Path) -> ResultRecord:
    """Read and validate one result file (v1 files are upgraded); errors name the file and the offending field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultFileError(f"{path}: no such result file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"{path}: not valid JSON ({exc}); delete it and re-run the bench") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version not in READABLE_VERSIONS:
        raise ResultFileError(f"{path}: schema_version {version!r} cannot be read by this scopebench (it reads "
                              f"{', '.join(map(str, READABLE_VERSIONS))}); upgrade scopebench or re-run the bench")
    try:
        if version == 1:
            raw = upgrade_v1(raw)
        return ResultRecord.model_validate(raw)
    except ValidationError as exc:
        raise ResultFileError(
            f"{path}: does not match result schema v{version} ({_problems(exc)}); "
            "see docs/results-schema.md, fix the field or delete the file and re-run the bench"
        ) from None
    except ValueError as exc:
        raise ResultFileError(f"{path}: cannot upgrade this v1 file ({exc}); delete it and re-run the bench") from None


def _same_model(old: SAEInfo | None, new: SAEInfo | None) -> bool:
    """False when ``new`` pins another SAE than ``old``: another training key for baselines the bench trained,
    else another weights hash or another config."""
    if old is None or new is None:
        return old is new
    if old.training and new.training:
        return old.training == new.training
    if new.checkpoint_sha256 is not None and new.checkpoint_sha256 != old.checkpoint_sha256:
        return False
    return not (new.config and old.config and new.config != old.config)


def extends(before: AnalysisRecord | None, record: AnalysisRecord) -> bool:
    """Whether ``record`` adds to ``before`` (same config, same images) rather than replacing it."""
    return before is not None and (before.config, before.dataset) == (record.config, record.dataset)


def merge_analysis(name: str, before: AnalysisRecord | None, record: AnalysisRecord) -> AnalysisRecord:
    """``record`` of analysis ``name`` on top of ``before``: with the same config and images the outputs
    merge field by field (attention EMD at more shifts, another probe task), else ``record`` replaces it."""
    if not extends(before, record):
        return record
    model = ANALYSES[name].output
    merged = model.model_validate(record.output).merged_over(model.model_validate(before.output))
    return record.model_copy(update={"output": output_json(merged)})


def merge_results(old: ResultRecord, new: ResultRecord) -> ResultRecord:
    """``new`` on top of ``old``: analyses and claims it ran replace or extend the old ones; the rest stay.

    An analysis run with the same config on the same images merges field by field (e.g. attention
    EMD at more shifts, another probe task); with another config or dataset it replaces the old
    one. If the new record pins a different SAE, the old record describes a different model and is
    dropped entirely rather than mixed with the new numbers.
    """
    old_sae, new_sae = (old.sae.name if old.sae else None), (new.sae.name if new.sae else None)
    if (old.backbone.name, old_sae) != (new.backbone.name, new_sae):
        raise ValueError(f"cannot merge results of {old.label} into {new.label}")
    if not _same_model(old.sae, new.sae):
        raise TakenName(f"{new.label} is already taken by another model (weights sha256 "
                        f"{(old.sae.checkpoint_sha256 or '?')[:12]}, now {(new.sae.checkpoint_sha256 or '?')[:12]}; "
                        "or another config): give this SAE another name, or pass --replace to replace the entry "
                        "(the old file is kept beside it as history)")
    analyses = dict(old.analyses)
    for name, record in new.analyses.items():
        analyses[name] = merge_analysis(name, analyses.get(name), record)
    keep_sae = new.sae is None or new.sae.config or new.sae.checkpoint_sha256
    return new.model_copy(update={
        "sae": new.sae if keep_sae else old.sae,
        "backbone": new.backbone if new.backbone.weights_id else old.backbone,
        "analyses": analyses,
        "claims": {**old.claims, **new.claims},
    })


def _lock_for(path: Path) -> FileLock:
    """One lock per results folder (a hidden file): merges are short, so writers of different files can wait."""
    return FileLock(str(path.with_name(".results.lock")))


def keep_beside(path: Path, why: str) -> Path:
    """Rename ``path`` to ``<name>.<why>-<n>`` (``corrupt``: unreadable; ``replaced``: history), never read again."""
    n = 0
    while (aside := path.with_name(f"{path.name}.{why}-{n}")).exists():
        n += 1
    os.replace(path, aside)
    return aside


def save_merged(record: ResultRecord, results_dir: Path, *, replace: bool = False) -> tuple[Path, str | None]:
    """Merge ``record`` into its file under ``results_dir`` (creating it if absent).

    The read-merge-write holds a lock on the folder, so two processes saving the same
    (backbone, SAE) at once both land. An existing file that cannot be read is set aside
    (``.corrupt-<n>``) and the new record is written alone. A file of another model under the
    same name raises :class:`TakenName` unless ``replace``; then it is kept as ``.replaced-<n>``.
    Returns the path and a note saying what was set aside, if anything.
    """
    path = result_path(results_dir, record.backbone.name, record.sae.name if record.sae else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    note = None
    with _lock_for(path):
        if path.exists():
            try:
                old = load_result(path)
            except ResultFileError as exc:
                note = f"{exc}; moved it to {keep_beside(path, 'corrupt').name} and wrote this run's results alone"
            else:
                try:
                    record = merge_results(old, record)
                except TakenName:
                    if not replace:
                        raise
                    note = f"replaced {record.label}: the previous model's file is kept as " \
                           f"{keep_beside(path, 'replaced').name}"
        write_result(record, path)
    return path, note


def quantity_table() -> str:
    """The Markdown table of every quantity (analysis, name, unit, meaning), generated from the output models."""
    rows = ["| analysis | quantity | unit | meaning |", "|---|---|---|---|"]
    for name, info in quantity_catalogue().items():
        key = f"{name}[s=N]" if name in ANALYSES[info.analysis].output.INDEXED_QUANTITIES else name
        rows.append(f"| `{info.analysis}` | `{key}` | {info.unit} | {info.description} |")
    return "\n".join(rows)
