"""``scopebench claims``: the paper's claims as the suite checks them, with the paper's own numbers."""
from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

from tabulate import tabulate

from scopebench.claims.registry import CLAIMS, PLANTED, PLANTED_FAMILY, Claim, evaluate, index_values
from scopebench.keys import indexed

_WRAP = 25  # characters per line of the backbones cell
_RELATION_WRAP = 30  # and of the relation cell: id, source, relation and backbones then fit 120 columns
_STATEMENT_WRAP = 52  # and of the statement under a claim's id in the coverage view, which then fits 120 columns


def _wrap_names(names: Sequence[str]) -> str:
    """Comma-separated names, broken between names (never inside one) into lines of about ``_WRAP`` chars."""
    lines: list[str] = []
    current = ""
    for name in names:
        joined = f"{current}, {name}" if current else name
        if current and len(joined) > _WRAP:
            lines.append(f"{current},")
            current = name
        else:
            current = joined
    lines.append(current)
    return "\n".join(lines)


def relation_text(claim: Claim) -> str:
    tolerance = f" (tol {claim.tolerance:g}{' per step' if claim.relation.along else ''})" if claim.tolerance else ""
    return claim.relation.text() + tolerance


def _cell(values: dict[str, float], key: str) -> str:
    return f"{values[key]:g}" if key in values else "–"


def _holds(claim: Claim, values: dict[str, float], *keys: str) -> str:
    """Whether the claim's relation holds on the paper's own numbers for ``keys`` ("–" when one is absent)."""
    if any(key not in values for key in keys):
        return "–"
    return "yes" if evaluate(claim, {key: values[key] for key in keys}).passed else "NO"


def paper_rows(claim: Claim) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the paper's numbers for ``claim``: one row per backbone (and index value).

    A monotone relation's row at index ``v`` says whether the step from the previous index value holds.
    """
    relation = claim.relation
    a, b = relation.a, relation.b
    rows: list[list[str]] = []
    if relation.along is not None:
        index = relation.along
        for backbone, values in claim.paper_values.items():
            steps = index_values(a, index, values)
            for previous, v in zip([None, *steps], steps):
                key = indexed(a, v, index)
                holds = "–" if previous is None else _holds(claim, values, indexed(a, previous, index), key)
                rows.append([backbone, str(v), _cell(values, key), holds])
        return ["backbone", index, a, "holds"], rows
    if relation.is_constant:
        for backbone, values in claim.paper_values.items():
            rows.append([backbone, _cell(values, a), _holds(claim, values, a)])
        return ["backbone", a, "holds"], rows
    if relation.for_every is None:
        for backbone, values in claim.paper_values.items():
            rows.append([backbone, _cell(values, a), _cell(values, b), _holds(claim, values, a, b)])
        return ["backbone", a, b, "holds"], rows
    every = relation.for_every
    for backbone, values in claim.paper_values.items():
        for s in index_values(a, every, values):
            a_key, b_key = indexed(a, s), indexed(b, s)
            rows.append([backbone, str(s), _cell(values, a_key), _cell(values, b_key),
                         _holds(claim, values, a_key, b_key)])
    return ["backbone", every, a, b, "holds"], rows


def render_claims(claims: Sequence[Claim]) -> str:
    """Summary table of ``claims``, then the paper's numbers behind each claim that has any."""
    if not claims:
        return "(no claims)"
    summary = tabulate([[c.id, c.source, textwrap.fill(relation_text(c), _RELATION_WRAP), _wrap_names(c.backbones)]
                        for c in claims],
                       headers=["id", "source", "relation", "backbones"], disable_numparse=True)
    parts = [summary, "", "Paper values (holds: the relation on the paper's own numbers):"]
    for claim in claims:
        headers, rows = paper_rows(claim)
        parts += ["", textwrap.fill(f"{claim.id} — {claim.statement}", 120, subsequent_indent="  ")]
        if rows:
            parts.append(tabulate(rows, headers=headers, disable_numparse=True))
        else:
            parts.append(f"  (the paper gives no numbers for this {claim.source.split()[0].lower()})")
    return "\n".join(parts)


def _on_planted(claim: Claim) -> str:
    """What the planted default shows of ``claim``: expected to hold, a known miss (and whose), or not checked."""
    if PLANTED not in claim.backbones:
        return "–"
    miss = claim.planted_miss
    if miss is None:
        return "expected"
    return "known miss:\n" + (_wrap_names(miss.architectures) if miss.architectures else "every SAE")


def _id_and_statement(claim: Claim) -> str:
    return claim.id + "\n" + textwrap.fill(claim.statement, _STATEMENT_WRAP, initial_indent="  ",
                                           subsequent_indent="  ")


def render_coverage(claims: Sequence[Claim]) -> str:
    """Where the paper makes each statement -> the claims that check it (id, then the statement) -> their backbones
    and what the planted default does with it, then a count line."""
    if not claims:
        return "(no claims)"
    sources = list(dict.fromkeys(c.source for c in claims))
    rows = [[source, _id_and_statement(c), _wrap_names(c.backbones), _on_planted(c)]
            for source in sources for c in claims if c.source == source]
    backbones = {b for c in claims for b in c.backbones}
    checks = sum(len(c.backbones) for c in claims)
    real = len(backbones - set(PLANTED_FAMILY))
    planted = [name for name in PLANTED_FAMILY if name in backbones]
    count = (f"{len(claims)} claims from {len(sources)} places in the paper, {checks} (claim, backbone) checks on "
             f"{real} of the paper's backbones" + (f" and {', '.join(planted)}" if planted else ""))
    table = tabulate(rows, headers=["source", "claim", "backbones", "on planted"], disable_numparse=True)
    return "\n".join([table, "", textwrap.fill(count, 120)])


def _run(args: argparse.Namespace) -> int:
    claims = [c for c in CLAIMS if args.table is None or c.table == args.table]
    print(render_coverage(claims) if args.coverage else render_claims(claims))
    return 0


def register_claims(subparsers: argparse._SubParsersAction) -> None:
    """``scopebench claims [--table TABLE]``."""
    tables = sorted({claim.table for claim in CLAIMS})
    parser = subparsers.add_parser(
        "claims", help="list the paper's claims the suite checks, with the paper's own numbers",
        description="List every claim of the paper the bench checks: id, where the paper makes it, the relation "
                    "tested, the backbones it applies to, and the paper's numbers for it.")
    parser.add_argument("--table", choices=tables, default=None, help="only claims recorded under this table")
    parser.add_argument("--coverage", action="store_true",
                        help="print the coverage instead: where the paper makes each statement, the claims that "
                             "check it and their backbones, with counts")
    parser.set_defaults(handler=_run)
