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
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scopebench import distributed
from scopebench.analyses import AnalysisOutput
from scopebench.claims.registry import (
    Claim, FamilyClaim, Verdict, check_all, compared_keys, evaluate, scored, size_series,
)
from scopebench.results.leaderboard import build_frame, load_results, render_text
from scopebench.plugin.options import default_results_dir
from scopebench.plugin.session import checked_folder
from scopebench.results.records import (
    AnalysisRecord, AnalysisResult, BackboneInfo, ClaimVerdict, ResultRecord, SAEInfo, collect_environment,
    TakenName, extends, merge_analysis, output_json, result_path, save_merged,
)
from scopebench.results.regression import run_regression

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
    # PASS / FAIL (asserted: the SAE under test), held / missed (scored, leaderboard mode), known miss (a missed
    # claim the backbone is known not to show with an SAE of this architecture: Claim.known_miss), SKIP
    verdict: str
    detail: str = ""
    margin: float | None = None  # the verdict's margin (scopebench.claims.registry); None: no verdict, or NaN


@dataclass
class PendingResult:
    """What this session learned about one (backbone, SAE) or one backbone; becomes a ResultRecord at the end."""

    backbone: BackboneInfo
    sae: SAEInfo | None
    analyses: dict[str, AnalysisRecord] = field(default_factory=dict)
    claims: dict[str, ClaimVerdict] = field(default_factory=dict)
    device: str = "cpu"
    # each analysis's merged output as an object, which keeps NaN (its JSON in ``analyses`` has null)
    outputs: dict[str, AnalysisOutput] = field(default_factory=dict)

    def add(self, result: AnalysisResult) -> None:
        """Fold in one analysis result (same analysis and config twice: outputs merge, e.g. more shifts).

        The output is merged as an object, once; the record's JSON is written from it.
        """
        name, record = result.analysis, result.record
        if extends(self.analyses.get(name), record):
            self.outputs[name] = result.output.merged_over(self.outputs[name])
            record = record.model_copy(update={"output": output_json(self.outputs[name])})
        else:
            self.outputs[name] = result.output
        self.analyses[name] = record
        self.backbone, self.device = result.backbone, result.device
        if result.sae is not None:
            self.sae = result.sae


@dataclass
class SessionClaims:
    rows: list[CaseRow] = field(default_factory=list)
    pending: dict[tuple[str, str | None], PendingResult] = field(default_factory=dict)
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # nodeid -> (outcome, reason)
    messages: list[tuple[str, str]] = field(default_factory=list)  # written results, refusals, regression report
    refused: bool = False  # a result was refused or regressed: the run fails


SESSION_KEY = pytest.StashKey[SessionClaims]()


class ClaimReport:
    """Per-test recorder handed out by the ``claim_report`` fixture."""

    def __init__(self, session: SessionClaims, nodeid: str, paper_sae: str) -> None:
        self._session = session
        self._nodeid = nodeid
        self._paper_sae = paper_sae

    def record(self, result: AnalysisResult) -> list[Verdict]:
        """Record one analysis result and evaluate every claim that applies to it (one call per output).

        Claims are evaluated on the output merged over what the session already measured with the same config
        (Table 9's shifts 1..6 after Table 7's s=1), so the verdict kept does not depend on the order of cases.
        Returns the verdicts; the case then calls :meth:`assert_held` on them.
        """
        pending = self._pending(result)
        output = pending.outputs[result.analysis]
        measured = output.quantities()
        asserted = self._asserted(result)
        verdicts = []
        for claim, verdict in check_all(result.analysis, output, result.backbone.name,
                                        architecture=result.sae_architecture, asserted=asserted):
            self._store(pending, claim, verdict, {k: measured[k] for k in compared_keys(claim, measured)})
            verdicts.append(verdict)
        return verdicts

    def record_family(self, claim: FamilyClaim, family: str, results: Sequence[AnalysisResult]) -> Verdict:
        """Evaluate ``claim`` across the sizes of ``family``, one result per size (same analysis and SAE).

        The verdict is stored once: in the record of the largest size measured (that backbone and SAE), its
        ``measured`` keyed ``quantity[size=i]``, ``i`` the rank in ``claim.families[family]``.
        """
        if not results:
            raise ValueError(f"{claim.id}: no result of {family} to compare")
        order = claim.families[family]
        by_name = {r.backbone.name: r for r in results}
        series = size_series(claim, family, {name: r.output.quantities() for name, r in by_name.items()})
        largest = by_name[max(by_name, key=order.index)]
        verdict = scored(claim, evaluate(claim, series), largest.backbone.name, largest.sae_architecture,
                         self._asserted(largest))
        sizes = ", ".join(f"{i}={name}" for i, name in enumerate(order) if name in by_name)
        verdict = verdict.model_copy(update={"detail": f"{verdict.detail} (sizes: {sizes})"})
        self._store(self._pending(largest), claim, verdict, series)
        return verdict

    def _pending(self, result: AnalysisResult) -> PendingResult:
        """The session's record of the result's (backbone, SAE), with the result folded in."""
        backbone, sae = result.backbone.name, result.sae.name if result.sae else None
        result_path(Path("."), backbone, sae)  # the name rule, before anything is recorded
        pending = self._session.pending.setdefault((backbone, sae), PendingResult(result.backbone, result.sae))
        pending.add(result)
        return pending

    def _asserted(self, result: AnalysisResult) -> bool:
        """Verify mode for the SAE under test and for backbone-level claims; leaderboard mode for every other SAE."""
        return result.sae is None or result.sae.name == self._paper_sae

    def _store(self, pending: PendingResult, claim: Claim, verdict: Verdict, values: dict[str, float]) -> None:
        backbone, sae = pending.backbone.name, pending.sae.name if pending.sae else None
        paper = claim.paper_values.get(backbone, {})
        compared_paper = {k: paper[k] for k in values if k in paper}
        margin = None if math.isnan(verdict.margin) else verdict.margin
        pending.claims[claim.id] = ClaimVerdict(passed=verdict.passed, detail=verdict.detail, source=claim.source,
                                                measured=values, paper=compared_paper, asserted=verdict.asserted,
                                                margin=margin)
        if verdict.asserted:
            label = "PASS" if verdict.passed else "FAIL"
        else:
            label = "held" if verdict.passed else ("known miss" if verdict.known_miss else "missed")
        self._session.rows.append(CaseRow(self._nodeid, claim.id, backbone, sae or "-", values, compared_paper,
                                          label, verdict.detail, margin))

    @staticmethod
    def assert_held(*verdicts: Verdict) -> None:
        """Fail the case on any asserted claim that did not hold (scored ones are only recorded)."""
        failed = [v.detail for v in verdicts if v.fails_run]
        assert not failed, "; ".join(failed)


def _superseded(earlier: CaseRow, later: CaseRow) -> bool:
    """``later`` checks the same claim of the same backbone and SAE on all ``earlier`` measured, maybe more."""
    return ((earlier.claim, earlier.backbone, earlier.sae) == (later.claim, later.backbone, later.sae)
            and all(later.measured.get(key) == value for key, value in earlier.measured.items()))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SESSION_KEY] = SessionClaims()
    option = config.getoption("results_dir")
    config.stash[_RESULTS_DIR_KEY] = (checked_folder(option, "--results-dir") if option
                                      else default_results_dir(config.rootpath))


@pytest.fixture
def claim_report(request: pytest.FixtureRequest) -> ClaimReport:
    """Record measurements and claim verdicts of a bench case for the summary and the result files."""
    return ClaimReport(request.config.stash[SESSION_KEY], request.node.nodeid,
                       request.config.getoption("paper_sae"))


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
    """Apply test outcomes: a case that failed or skipped before recording a verdict gets one row.

    Two cases may check the same claim on the same measurement (Table 7's s=1 is part of Table 9's output,
    Figure 8's classification part of Table 3's probes): the summary shows only the last check, the one the
    result file keeps.
    """
    recorded = {row.nodeid for row in session.rows}
    rows = [row for i, row in enumerate(session.rows)
            if not any(_superseded(row, later) for later in session.rows[i + 1:])]
    for nodeid, (outcome, reason) in session.outcomes.items():
        if nodeid not in recorded:
            verdict = {"failed": "FAIL", "skipped": "SKIP"}.get(outcome, "PASS")
            rows.append(CaseRow(nodeid, nodeid.rsplit("::", 1)[-1], "-", "-", {}, {}, verdict,
                                reason or "recorded nothing"))
    return rows


def _fmt_values(values: Mapping[str, float], paper: Mapping[str, float]) -> str:
    """``name=value``, with the paper's value in brackets where it gives one."""
    return " ".join(f"{k}={v:.4g}" + (f" ({paper[k]:.4g})" if k in paper else "") for k, v in values.items())


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


#: the claims table's fixed columns and the widest each may get (then measured (paper) in what is left)
_COLUMNS = (("verdict", 10), ("claim", 45), ("backbone", 12), ("SAE", 16), ("margin", 9))


def _margin_cell(margin: float | None) -> str:
    return "" if margin is None else f"{margin:+.3g}"


def render_rows(rows: list[CaseRow], width: int = 120) -> str:
    """One line per (claim, backbone, SAE), verdict first, at most ``width`` characters (full detail is in the
    result files): the verdict's margin (how far from failing, in the unit of the claim's first quantity), then
    the compared values, each with the paper's in brackets where it gives one."""
    cells = [[row.verdict, row.claim, row.backbone, row.sae, _margin_cell(row.margin)] for row in rows]
    widths = [min(cap, max([len(name)] + [len(c[i]) for c in cells])) for i, (name, cap) in enumerate(_COLUMNS)]
    rest = width - sum(w + 2 for w in widths)
    lines = ["  ".join(name.ljust(w) for (name, _), w in zip(_COLUMNS, widths)) + "  measured (paper)",
             "  ".join("-" * w for w in widths) + "  " + "-" * (rest - 2)]
    for row, cell in zip(rows, cells):
        values = _fmt_values(row.measured, row.paper) or row.detail
        lines.append("  ".join(_fit(c, w).ljust(w) for c, w in zip(cell, widths)) + "  " + _fit(values, rest - 2))
    return "\n".join(line.rstrip() for line in lines)


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


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist (controller): a worker finished; merge what it measured."""
    text = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT)
    if text is not None:
        _merge_worker_session(node.config.stash[SESSION_KEY], text)


def _save(session: SessionClaims, config: pytest.Config) -> list[tuple[str, str]]:
    """Write every record of the session; one that cannot be written is named, the others still land.

    Returns the lines to show (text, colour); a refused record (another model under a taken name)
    fails the run.
    """
    lines, replace_ok = [], config.getoption("replace")
    for record in _records(session, config.rootpath):
        try:
            path, note = save_merged(record, results_dir_of(config), replace=replace_ok)
        except TakenName as exc:
            lines.append((f"scopebench: {exc}", "red"))
            session.refused = True
            continue
        except (OSError, ValueError) as exc:
            lines.append((f"scopebench: results of {record.label} not written: {exc}", "red"))
            continue
        lines.append((f"scopebench: wrote {path}", ""))
        if note:
            lines.append((f"scopebench: {note}", "yellow"))
    return lines


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Hand a pytest-xdist worker's claims to the controller; on the controller (or without xdist) write the
    results and compare them with a regression baseline, failing the run on a refusal or a regression."""
    config = session.config
    claims = config.stash.get(SESSION_KEY, None)
    workeroutput = getattr(config, "workeroutput", None)
    if claims is None:
        return
    if workeroutput is not None:
        workeroutput[_WORKER_OUTPUT] = _session_to_json(claims)
        return
    if not claims.pending or config.getoption("no_results") or not distributed.is_main():
        return  # under torchrun every rank measured the same numbers: rank 0 alone writes them
    claims.messages = _save(claims, config)
    baseline = config.getoption("baseline")
    if baseline is not None:
        passed, text = run_regression(claims.pending.values(), results_dir_of(config), Path(baseline),
                                      update=config.getoption("update_baseline"))
        claims.messages.append((text, "" if passed else "red"))
        claims.refused = claims.refused or not passed
    if claims.refused and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not session.outcomes or hasattr(config, "workerinput") or not distributed.is_main():
        return
    rows = _finalise_rows(session)
    terminalreporter.section("scopebench claims")
    terminalreporter.write_line(render_rows(rows))
    for row in rows:
        if row.verdict == "FAIL":
            terminalreporter.write_line(textwrap.fill(f"FAIL {row.nodeid} [{row.claim}]: {row.detail}", 120,
                                                      subsequent_indent="    "), red=True)
    for text, colour in session.messages:
        terminalreporter.write_line(text, **({colour: True} if colour else {}))
    if config.getoption("no_results") or not session.pending:
        return
    problems: list[str] = []
    frame = build_frame(load_results(results_dir_of(config), problems))
    for problem in problems:
        terminalreporter.write_line(f"scopebench: left out of the leaderboard: {problem}", red=True)
    terminalreporter.section("scopebench leaderboard")
    terminalreporter.write_line(render_text(frame))
