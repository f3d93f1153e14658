"""The reporter part of the plugin: the ``claim_report`` fixture, the end-of-session claims table, result files.

A *bench case* is any test that requests ``claim_report``. Sessions without bench cases
print and write nothing. Otherwise the summary shows one row per measurement or claim
check (and one row for a bench case that failed or skipped before recording anything),
then results are merged into ``<results-dir>/<backbone>__<sae>.json`` (``--results-dir``, default
``leaderboard/results`` in the rootdir: :func:`scopebench.plugin.options.default_results_dir`) and the
leaderboard of that folder is printed.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, Union

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError
from tabulate import tabulate

from scopebench.claims import PAPER_TABLES, Verdict, evaluate, get_claim
from scopebench.leaderboard import build_frame, load_results, render_text
from scopebench.plugin.options import default_results_dir
from scopebench.plugin.session import checked_folder
from scopebench.results import (
    BackboneInfo, ClaimVerdict, DatasetInfo, Definitions, ResultRecord, SAEInfo, collect_environment, result_path, save_merged,
)

FIXTURE_NAME = "claim_report"
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class CaseRow:
    """One line of the terminal claims table."""

    nodeid: str
    claim: str
    backbone: str
    sae: str
    measured: dict[str, float]
    paper: dict[str, float]
    verdict: str  # PASS / FAIL / XFAIL (failed, exempt SAE) / SKIP / "measured"
    detail: str = ""


@dataclass
class PendingResult:
    """What this session learned about one (backbone, SAE); becomes a ResultRecord at the end."""

    backbone: BackboneInfo
    sae: SAEInfo
    datasets: dict[str, DatasetInfo] = field(default_factory=dict)
    definitions: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, dict[str, float]] = field(default_factory=dict)
    claims: dict[str, ClaimVerdict] = field(default_factory=dict)
    device: str = "cpu"


@dataclass
class SessionClaims:
    rows: list[CaseRow] = field(default_factory=list)
    pending: dict[tuple[str, str], PendingResult] = field(default_factory=dict)
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # nodeid -> (outcome, reason)


SESSION_KEY = pytest.StashKey[SessionClaims]()


def _validated(model: type[ModelT], value: object, argument: str) -> ModelT:
    try:
        return model.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"claim_report.measure({argument}=...) is invalid ({problems}); "
                         f"allowed keys: {', '.join(model.model_fields)}") from None


def _json_ready(sae: SAEInfo) -> SAEInfo:
    """The SAE info with its config as plain JSON types; refuses what a result file cannot hold."""
    try:
        return SAEInfo.model_validate(json.loads(json.dumps(sae.model_dump(mode="json"))))
    except (TypeError, ValueError, PydanticSerializationError) as exc:
        raise ValueError(f"claim_report.measure(sae_config=...) must be JSON-serialisable: {exc}") from None


class ClaimReport:
    """Per-test recorder handed out by the ``claim_report`` fixture."""

    def __init__(self, session: SessionClaims, nodeid: str) -> None:
        self._session = session
        self._nodeid = nodeid

    def _pending(self, backbone: str, sae: str) -> PendingResult:
        result_path(Path("."), backbone, sae)  # the name rule, before anything is recorded
        key = (backbone, sae)
        if key not in self._session.pending:
            self._session.pending[key] = PendingResult(BackboneInfo(name=backbone), SAEInfo(name=sae))
        return self._session.pending[key]

    def measure(
        self,
        *,
        backbone: str,
        sae: str,
        table: str,
        values: Mapping[str, float],
        dataset: Union[DatasetInfo, Mapping[str, Any], None] = None,
        definitions: Union[Definitions, Mapping[str, Any], None] = None,
        sae_config: Mapping[str, Any] | None = None,
        sae_checkpoint_sha256: str | None = None,
        weights_id: str | None = None,
        device: str | None = None,
    ) -> None:
        """Record measured ``values`` (quantity key -> float, NaN allowed) under ``table``."""
        if not values:
            raise ValueError(f"claim_report.measure(table={table!r}) got no values; pass a non-empty mapping")
        # validate everything before recording anything, so a bad call leaves no partial record
        floats = {k: float(v) for k, v in values.items()}
        parsed_dataset = None if dataset is None else _validated(DatasetInfo, dataset, "dataset")
        parsed_definitions = None if definitions is None else _validated(Definitions, definitions, "definitions")
        sae_info = None
        if sae_config is not None or sae_checkpoint_sha256 is not None:
            sae_info = _json_ready(SAEInfo(name=sae, config=dict(sae_config or {}),
                                           checkpoint_sha256=sae_checkpoint_sha256))
        pending = self._pending(backbone, sae)
        pending.measurements.setdefault(table, {}).update(floats)
        if parsed_dataset is not None:
            pending.datasets[table] = parsed_dataset
        if parsed_definitions is not None:
            pending.definitions.update(parsed_definitions.model_dump(exclude_unset=True))
        if sae_info is not None:
            pending.sae = SAEInfo(name=sae, config=sae_info.config or pending.sae.config,
                                  checkpoint_sha256=sae_info.checkpoint_sha256 or pending.sae.checkpoint_sha256)
        if weights_id is not None:
            pending.backbone = BackboneInfo(name=backbone, weights_id=weights_id)
        if device is not None:
            pending.device = device
        paper_row = PAPER_TABLES.get(table, {}).get(backbone, {})
        self._session.rows.append(CaseRow(
            self._nodeid, f"{table} (measured)", backbone, sae, dict(values),
            {k: paper_row[k] for k in values if k in paper_row}, "measured",
        ))

    def check(self, claim_id: str, *, backbone: str, sae: str, measured: Mapping[str, float]) -> Verdict:
        """Evaluate a claim on ``measured``, record verdict and values; the test then asserts ``passed``."""
        claim = get_claim(claim_id)
        if not claim.applies_to(backbone):
            raise ValueError(f"claim {claim_id!r} does not apply to backbone {backbone!r}; "
                             f"it covers {', '.join(claim.backbones)}")
        verdict = evaluate(claim, measured)
        paper_row = claim.paper_values.get(backbone, {})
        paper = {k: paper_row[k] for k in measured if k in paper_row}
        values = {k: float(v) for k, v in measured.items()}
        pending = self._pending(backbone, sae)
        pending.measurements.setdefault(claim.table, {}).update(values)
        verdict = verdict.model_copy(update={"exemption": claim.exempt_saes.get(sae)})
        pending.claims[claim_id] = ClaimVerdict(passed=verdict.passed, detail=verdict.detail, source=claim.source,
                                                measured=values, paper=paper, exemption=verdict.exemption)
        label = "PASS" if verdict.passed else "XFAIL" if verdict.expected_failure else "FAIL"
        self._session.rows.append(CaseRow(self._nodeid, claim_id, backbone, sae, values, paper, label,
                                          verdict.detail))
        return verdict

    @staticmethod
    def assert_held(*verdicts: Verdict) -> None:
        """Fail the case on any claim that did not hold, unless the claim exempts this SAE.

        Only exempted failures: the case ends as an expected failure (pytest xfail) naming why.
        """
        failed = [v.detail for v in verdicts if not v.passed and not v.expected_failure]
        assert not failed, "; ".join(failed)
        excused = [v for v in verdicts if v.expected_failure]
        if excused:
            pytest.xfail("; ".join(f"{v.detail} (not expected of this SAE: {v.exemption})" for v in excused))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SESSION_KEY] = SessionClaims()
    option = config.getoption("results_dir")
    config.stash[_RESULTS_DIR_KEY] = (checked_folder(option, "--results-dir") if option
                                      else default_results_dir(config.rootpath))


@pytest.fixture
def claim_report(request: pytest.FixtureRequest) -> ClaimReport:
    """Record measurements and claim verdicts of a bench case for the summary and the result files."""
    return ClaimReport(request.config.stash[SESSION_KEY], request.node.nodeid)


def _reason(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0]
    lines = [line for line in report.longreprtext.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if FIXTURE_NAME in getattr(item, "fixturenames", ()):
        outcomes = item.config.stash[SESSION_KEY].outcomes
        previous, _ = outcomes.get(item.nodeid, ("passed", ""))
        if report.failed or (report.skipped and previous != "failed"):
            outcomes[item.nodeid] = (report.outcome, _reason(report))
        else:
            outcomes.setdefault(item.nodeid, ("passed", ""))
    return report


def _finalise_rows(session: SessionClaims) -> list[CaseRow]:
    """Apply test outcomes: a failed test fails its rows without a claim verdict of their own
    (a claim that held keeps its PASS when a sibling claim of the same case fails); a case
    with no rows gets one."""
    rows = []
    recorded = {row.nodeid for row in session.rows}
    for row in session.rows:
        outcome, reason = session.outcomes.get(row.nodeid, ("passed", ""))
        if outcome == "failed" and row.verdict not in ("PASS", "FAIL"):
            row = replace(row, verdict="FAIL", detail=f"test failed: {reason}")
        rows.append(row)
    for nodeid, (outcome, reason) in session.outcomes.items():
        if nodeid not in recorded:
            verdict = {"failed": "FAIL", "skipped": "SKIP"}.get(outcome, "PASS")
            rows.append(CaseRow(nodeid, "-", "-", "-", {}, {}, verdict, reason or "recorded nothing"))
    return rows


def _fmt_values(values: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in values.items()) or "-"


def render_rows(rows: list[CaseRow]) -> str:
    table = [[row.nodeid.rsplit("::", 1)[-1], row.claim, row.backbone, row.sae, _fmt_values(row.measured),
              _fmt_values(row.paper), row.verdict] for row in rows]
    return tabulate(table, headers=["case", "claim", "backbone", "SAE", "measured", "paper", "verdict"],
                    tablefmt="simple", disable_numparse=True)


def _records(session: SessionClaims, repo_dir: Path) -> list[ResultRecord]:
    return [
        ResultRecord(
            backbone=p.backbone, sae=p.sae, datasets=p.datasets, definitions=Definitions(**p.definitions),
            measurements=p.measurements, claims=p.claims,
            environment=collect_environment(device=p.device, repo_dir=repo_dir),
        )
        for p in session.pending.values()
    ]


def results_dir_of(config: pytest.Config) -> Path:
    return config.stash[_RESULTS_DIR_KEY]


_RESULTS_DIR_KEY = pytest.StashKey[Path]()
_WORKER_OUTPUT = "scopebench_claims"  # key of a pytest-xdist worker's session, sent to the controller


def _session_to_json(session: SessionClaims) -> str:
    return json.dumps({
        "rows": [asdict(row) for row in session.rows],
        "outcomes": session.outcomes,
        "pending": [{"backbone": p.backbone.model_dump(mode="json"), "sae": p.sae.model_dump(mode="json"),
                     "datasets": {k: v.model_dump(mode="json") for k, v in p.datasets.items()},
                     "definitions": p.definitions, "measurements": p.measurements,
                     "claims": {k: v.model_dump(mode="json") for k, v in p.claims.items()}, "device": p.device}
                    for p in session.pending.values()],
    })


def _merge_worker_session(session: SessionClaims, text: str) -> None:
    """Fold a worker's session into the controller's (disjoint tests; the same (backbone, SAE) merges)."""
    data = json.loads(text)
    session.rows.extend(CaseRow(**row) for row in data["rows"])
    session.outcomes.update({k: tuple(v) for k, v in data["outcomes"].items()})
    for raw in data["pending"]:
        found = PendingResult(
            BackboneInfo(**raw["backbone"]), SAEInfo(**raw["sae"]),
            datasets={k: DatasetInfo(**v) for k, v in raw["datasets"].items()}, definitions=raw["definitions"],
            measurements=raw["measurements"], claims={k: ClaimVerdict(**v) for k, v in raw["claims"].items()},
            device=raw["device"])
        key = (found.backbone.name, found.sae.name)
        mine = session.pending.setdefault(key, found)
        if mine is found:
            continue
        for table, values in found.measurements.items():
            mine.measurements.setdefault(table, {}).update(values)
        mine.datasets.update(found.datasets)
        mine.definitions.update(found.definitions)
        mine.claims.update(found.claims)
        if found.sae.config or found.sae.checkpoint_sha256:
            mine.sae = found.sae
        if found.backbone.weights_id:
            mine.backbone = found.backbone
        if found.device != "cpu":
            mine.device = found.device


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker, hand this worker's claims to the controller, which reports them once."""
    workeroutput = getattr(session.config, "workeroutput", None)
    claims = session.config.stash.get(SESSION_KEY, None)
    if workeroutput is not None and claims is not None:
        workeroutput[_WORKER_OUTPUT] = _session_to_json(claims)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist (controller): a worker finished; merge what it measured."""
    text = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT)
    if text is not None:
        _merge_worker_session(node.config.stash[SESSION_KEY], text)


def _save(session: SessionClaims, results_dir: Path, repo_dir: Path, terminalreporter: Any) -> None:
    """Write every record of the session; one that cannot be written is named, the others still land."""
    for record in _records(session, repo_dir):
        try:
            path, note = save_merged(record, results_dir)
        except (OSError, ValueError) as exc:
            terminalreporter.write_line(f"scopebench: results of {record.backbone.name}/{record.sae.name} "
                                        f"not written: {exc}", red=True)
            continue
        terminalreporter.write_line(f"scopebench: wrote {path}")
        if note:
            terminalreporter.write_line(f"scopebench: {note}", yellow=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not session.outcomes or hasattr(config, "workerinput"):
        return
    rows = _finalise_rows(session)
    terminalreporter.section("scopebench claims")
    terminalreporter.write_line(render_rows(rows))
    for row in rows:
        if row.verdict == "FAIL":
            terminalreporter.write_line(f"FAIL {row.nodeid} [{row.claim}]: {row.detail}", red=True)
        elif row.verdict == "XFAIL":
            reason = get_claim(row.claim).exempt_saes[row.sae]
            terminalreporter.write_line(f"XFAIL {row.nodeid} [{row.claim}]: {row.detail}; not expected of "
                                        f"{row.sae}: {reason}", yellow=True)
    if config.getoption("no_results") or not session.pending:
        return
    results_dir = results_dir_of(config)
    _save(session, results_dir, config.rootpath, terminalreporter)
    problems: list[str] = []
    frame = build_frame(load_results(results_dir, problems))
    for problem in problems:
        terminalreporter.write_line(f"scopebench: left out of the leaderboard: {problem}", red=True)
    terminalreporter.section("scopebench leaderboard")
    terminalreporter.write_line(render_text(frame))
