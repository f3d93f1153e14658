"""The reporter part of the plugin: the ``claim_report`` fixture, the end-of-session claims table, result files.

A *bench case* is any test that requests ``claim_report``. Sessions without bench cases
print and write nothing. Otherwise the summary shows one row per measurement or claim
check (and one row for a bench case that failed or skipped before recording anything),
then results are merged into ``<results-dir>/<backbone>__<sae>.json`` (``<backbone>.json`` for
analyses that need no SAE; ``--results-dir``, default ``leaderboard/results`` in the rootdir:
:func:`scopebench.plugin.options.default_results_dir`) and the leaderboard of that folder is printed.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from tabulate import tabulate

from scopebench.claims.registry import Claim, Verdict, check_all, get_claim
from scopebench.keys import base_name
from scopebench.results.leaderboard import build_frame, load_results, render_text
from scopebench.paper import paper_values
from scopebench.plugin.options import default_results_dir
from scopebench.plugin.session import checked_folder
from scopebench.results.records import (
    AnalysisRecord, AnalysisResult, BackboneInfo, ClaimVerdict, ResultRecord, SAEInfo, collect_environment,
    merge_analysis, result_path, save_merged,
)

FIXTURE_NAME = "claim_report"


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
    """What this session learned about one (backbone, SAE) or one backbone; becomes a ResultRecord at the end."""

    backbone: BackboneInfo
    sae: SAEInfo | None
    analyses: dict[str, AnalysisRecord] = field(default_factory=dict)
    claims: dict[str, ClaimVerdict] = field(default_factory=dict)
    device: str = "cpu"

    def add(self, result: AnalysisResult) -> None:
        """Fold in one analysis result (same analysis and config twice: outputs merge, e.g. more shifts)."""
        self.analyses[result.analysis] = merge_analysis(result.analysis, self.analyses.get(result.analysis),
                                                        result.record)
        self.backbone, self.device = result.backbone, result.device
        if result.sae is not None:
            self.sae = result.sae


@dataclass
class SessionClaims:
    rows: list[CaseRow] = field(default_factory=list)
    pending: dict[tuple[str, str | None], PendingResult] = field(default_factory=dict)
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # nodeid -> (outcome, reason)


SESSION_KEY = pytest.StashKey[SessionClaims]()


class ClaimReport:
    """Per-test recorder handed out by the ``claim_report`` fixture."""

    def __init__(self, session: SessionClaims, nodeid: str) -> None:
        self._session = session
        self._nodeid = nodeid

    def record(self, result: AnalysisResult) -> list[Verdict]:
        """Record one analysis result and evaluate every claim that applies to it (one call per output).

        Returns the verdicts; the case then calls :meth:`assert_held` on them.
        """
        backbone, sae = result.backbone.name, result.sae.name if result.sae else None
        result_path(Path("."), backbone, sae)  # the name rule, before anything is recorded
        key = (backbone, sae)
        pending = self._session.pending.setdefault(key, PendingResult(result.backbone, result.sae))
        pending.add(result)
        measured = result.output.quantities()
        checked = check_all(result.analysis, result.output, backbone, sae)
        shown = {k for claim, _ in checked for k in measured if base_name(k) in claim.quantities
                 or k in claim.quantities}
        paper = paper_values(backbone, measured)
        row = {k: v for k, v in measured.items() if k in shown or k in paper}
        self._session.rows.append(CaseRow(self._nodeid, f"{result.analysis} (measured)", backbone, sae or "-", row,
                                          {k: paper[k] for k in row if k in paper}, "measured"))
        verdicts = []
        for claim, verdict in checked:
            values = {k: measured[k] for k in _compared(claim, measured)}
            compared_paper = {k: paper[k] for k in values if k in paper}
            pending.claims[claim.id] = ClaimVerdict(passed=verdict.passed, detail=verdict.detail, source=claim.source,
                                                    measured=values, paper=compared_paper, exemption=verdict.exemption)
            label = "PASS" if verdict.passed else "XFAIL" if verdict.expected_failure else "FAIL"
            self._session.rows.append(CaseRow(self._nodeid, claim.id, backbone, sae or "-", values, compared_paper,
                                              label, verdict.detail))
            verdicts.append(verdict)
        return verdicts

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


def _compared(claim: Claim, measured: Mapping[str, float]) -> list[str]:
    """The measured keys a claim compares (every shift of a ``for_every`` relation)."""
    if claim.relation.for_every is None:
        return [claim.relation.a, claim.relation.b]
    return [k for k in measured if base_name(k) in claim.quantities]


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
    return [ResultRecord(backbone=p.backbone, sae=p.sae, analyses=p.analyses, claims=p.claims,
                         environment=collect_environment(device=p.device, repo_dir=repo_dir))
            for p in session.pending.values()]


def results_dir_of(config: pytest.Config) -> Path:
    return config.stash[_RESULTS_DIR_KEY]


_RESULTS_DIR_KEY = pytest.StashKey[Path]()
_WORKER_OUTPUT = "scopebench_claims"  # key of a pytest-xdist worker's session, sent to the controller


def _session_to_json(session: SessionClaims) -> str:
    return json.dumps({
        "rows": [asdict(row) for row in session.rows],
        "outcomes": session.outcomes,
        "pending": [{"backbone": p.backbone.model_dump(mode="json"),
                     "sae": p.sae.model_dump(mode="json") if p.sae else None,
                     "analyses": {k: v.model_dump(mode="json") for k, v in p.analyses.items()},
                     "claims": {k: v.model_dump(mode="json") for k, v in p.claims.items()}, "device": p.device}
                    for p in session.pending.values()],
    })


def _merge_worker_session(session: SessionClaims, text: str) -> None:
    """Fold a worker's session into the controller's (disjoint tests; the same (backbone, SAE) merges)."""
    data = json.loads(text)
    session.rows.extend(CaseRow(**row) for row in data["rows"])
    session.outcomes.update({k: tuple(v) for k, v in data["outcomes"].items()})
    for raw in data["pending"]:
        found = PendingResult(BackboneInfo(**raw["backbone"]), SAEInfo(**raw["sae"]) if raw["sae"] else None,
                              analyses={k: AnalysisRecord(**v) for k, v in raw["analyses"].items()},
                              claims={k: ClaimVerdict(**v) for k, v in raw["claims"].items()}, device=raw["device"])
        key = (found.backbone.name, found.sae.name if found.sae else None)
        mine = session.pending.setdefault(key, found)
        if mine is found:
            continue
        for name, record in found.analyses.items():
            mine.analyses[name] = merge_analysis(name, mine.analyses.get(name), record)
        mine.claims.update(found.claims)
        if found.sae is not None:
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
            terminalreporter.write_line(f"scopebench: results of {record.label} not written: {exc}", red=True)
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
