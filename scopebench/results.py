"""Result records: one validated JSON file per (backbone, SAE), written atomically.

A bench session fills in only the tables it ran; :func:`merge_results` folds it into
the file already on disk so earlier measurements of other tables survive. The schema
is documented in ``docs/results-schema.md``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Optional, Union

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scopebench.atomic import write_text_atomic
from scopebench.names import check_name

SCHEMA_VERSION = 1

FVU_NORMALISATION = (
    "dataset-level: sum_t ||x_t - xhat_t||^2 / sum_t ||x_t - mu_T||^2 over the token set T, "
    "mu_T the per-dimension mean over T (not per token, not per batch)"
)

Measurement = Optional[float]  # None stands for NaN / not computable


class BackboneInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    weights_id: Optional[str] = None  # e.g. HF repo + file, or the sha256 of a local weights file


class SAEInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    config: dict[str, Any] = Field(default_factory=dict)
    checkpoint_sha256: Optional[str] = None


class DatasetInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    identity: str  # split + seed, file-list hash, ...: whatever pins the exact images
    n_images: Optional[int] = None
    n_tokens: Optional[int] = None


class Definitions(BaseModel):
    """The metric settings the measurements depend on; None means "not used by this run"."""

    model_config = ConfigDict(extra="forbid")

    fvu_normalisation: str = FVU_NORMALISATION
    cds_k: Optional[int] = None
    cds_shift: Optional[int] = None
    tau: Union[float, Literal["auto"], None] = None
    tau_value: Optional[float] = None  # the threshold actually applied when tau == "auto"
    gamma: Optional[float] = None


class ClaimVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: bool
    detail: str
    source: str
    measured: dict[str, Measurement]
    paper: dict[str, float] = Field(default_factory=dict)
    exemption: str | None = None  # why this SAE need not satisfy the claim (a failure is then expected)

    @field_validator("measured", mode="before")
    @classmethod
    def _nan_to_none(cls, value: Any) -> Any:
        return _clean_values(value)


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
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    backbone: BackboneInfo
    sae: SAEInfo
    datasets: dict[str, DatasetInfo] = Field(default_factory=dict)  # table -> dataset it was measured on
    definitions: Definitions = Field(default_factory=Definitions)
    measurements: dict[str, dict[str, Measurement]] = Field(default_factory=dict)  # table -> quantity -> value
    claims: dict[str, ClaimVerdict] = Field(default_factory=dict)  # claim id -> verdict
    environment: Environment

    @field_validator("measurements", mode="before")
    @classmethod
    def _nan_to_none(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {table: _clean_values(values) for table, values in value.items()}
        return value


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


BACKBONE_LEVEL_SAE = "-"
"""The SAE slot of records that need no SAE (attention EMD); outside the name rule, so no SAE can take it."""


def result_path(results_dir: Path, backbone: str, sae: str) -> Path:
    """``<results_dir>/<backbone>__<sae>.json``; both names follow :mod:`scopebench.names` (never cleaned,
    so two names cannot share a file and none can leave ``results_dir``)."""
    check_name(backbone, "backbone name")
    if sae != BACKBONE_LEVEL_SAE:
        check_name(sae, "SAE name")
    return Path(results_dir) / f"{backbone}__{sae}.json"


def write_result(record: ResultRecord, path: Path) -> None:
    text = json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=False)
    write_text_atomic(path, text + "\n")


def load_result(path: Path) -> ResultRecord:
    """Read and validate one result file; errors name the file and the offending field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultFileError(f"{path}: no such result file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"{path}: not valid JSON ({exc}); delete it and re-run the bench") from None
    try:
        return ResultRecord.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '<root>'}': {err['msg']}" for err in exc.errors()
        )
        raise ResultFileError(
            f"{path}: does not match result schema v{SCHEMA_VERSION} ({problems}); "
            "see docs/results-schema.md, fix the field or delete the file and re-run the bench"
        ) from None


def merge_results(old: ResultRecord, new: ResultRecord) -> ResultRecord:
    """``new`` on top of ``old``: tables, quantities and claims it ran replace the old ones; the rest stay.

    If the new record pins a different SAE (another weights hash, or another config), the old
    record describes a different model and is dropped entirely rather than mixed with the new
    numbers.  A record that pins nothing (e.g. attention EMD, which uses no SAE) merges.
    """
    if (old.backbone.name, old.sae.name) != (new.backbone.name, new.sae.name):
        raise ValueError(f"cannot merge results of {old.backbone.name}/{old.sae.name} "
                         f"into {new.backbone.name}/{new.sae.name}")
    if new.sae.checkpoint_sha256 is not None and new.sae.checkpoint_sha256 != old.sae.checkpoint_sha256:
        return new
    if new.sae.config and old.sae.config and new.sae.config != old.sae.config:
        return new
    measurements = {table: dict(values) for table, values in old.measurements.items()}
    for table, values in new.measurements.items():
        measurements.setdefault(table, {}).update(values)
    definitions = old.definitions.model_copy(update=new.definitions.model_dump(exclude_none=True))
    return new.model_copy(update={
        "sae": new.sae if new.sae.config or new.sae.checkpoint_sha256 else old.sae,
        "backbone": new.backbone if new.backbone.weights_id else old.backbone,
        "datasets": {**old.datasets, **new.datasets},
        "definitions": definitions,
        "measurements": measurements,
        "claims": {**old.claims, **new.claims},
    })


def _lock_for(path: Path) -> FileLock:
    """One lock per results folder (a hidden file): merges are short, so writers of different files can wait."""
    return FileLock(str(path.with_name(".results.lock")))


def set_aside(path: Path) -> Path:
    """Rename an unreadable result file to ``<name>.corrupt-<n>`` (kept for inspection, never read again)."""
    n = 0
    while (aside := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    os.replace(path, aside)
    return aside


def save_merged(record: ResultRecord, results_dir: Path) -> tuple[Path, str | None]:
    """Merge ``record`` into its file under ``results_dir`` (creating it if absent).

    The read-merge-write holds a lock on the file, so two processes saving the same
    (backbone, SAE) at once both land.  An existing file that cannot be read is set aside
    (renamed, not deleted) and the new record is written alone.  Returns the path and a
    note saying what was set aside, if anything.
    """
    path = result_path(results_dir, record.backbone.name, record.sae.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    note = None
    with _lock_for(path):
        if path.exists():
            try:
                record = merge_results(load_result(path), record)
            except ResultFileError as exc:
                aside = set_aside(path)
                note = f"{exc}; moved it to {aside.name} and wrote this run's results alone"
        write_result(record, path)
    return path, note
