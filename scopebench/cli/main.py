"""The ``scopebench`` command line.

Each command group is a ``register(subparsers)`` function in :data:`COMMANDS`; it adds its
parser and sets ``handler`` (``argparse.Namespace -> int`` exit code) as a default.  To add
a command, write such a function (in its own module) and append it to ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from filelock import Timeout
from tabulate import tabulate

from scopebench.pipeline.cache import CACHE_ENV, TOKENS, ActivationStore, EntryInfo, default_cache_dir
from scopebench.cli.backbones import register_backbones
from scopebench.cli.claims import register_claims
from scopebench.cli.leaderboard import register_leaderboard
from scopebench.cli.plan import register_plan
from scopebench.cli.quantities import register_quantities
from scopebench.cli.recipes import register_recipes
from scopebench.cli.regression import register_regression
from scopebench.cli.submit import register_submit
from scopebench.cli.weights import register_weights


def _store(args: argparse.Namespace) -> ActivationStore:
    return ActivationStore(args.cache_dir if args.cache_dir is not None else default_cache_dir())


def _disk_bytes(folder: Path) -> int:
    if folder.is_file():
        return folder.stat().st_size
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _status(info: EntryInfo) -> str:
    if info.problem is not None:
        return "CORRUPTED"
    if info.legacy:
        return "legacy (unsealed, never read)"
    if info.kind != TOKENS:
        return "complete/ok" if info.sealed else "unsealed (rebuilt on next use)"
    assert info.meta is not None
    if not info.meta.complete:
        return f"incomplete ({len(info.meta.done_shards())}/{info.meta.n_shards} shards)"
    return "complete/ok" if info.sealed else "unsealed (re-run its extraction to seal it)"


def _shape(info: EntryInfo) -> str:
    if info.kind != TOKENS:
        return str(info.info.get("shape", "-"))
    if info.meta is None:
        return "?"
    arrays = info.meta.arrays
    name = "tokens" if "tokens" in arrays else next((n for n in sorted(arrays) if n.startswith("tokens")), None)
    if name is None:
        return f"{info.meta.n_rows} rows"
    return "x".join(str(d) for d in (info.meta.n_rows, *arrays[name]["row_shape"]))


def _columns(info: EntryInfo) -> list[str]:
    """kind, backbone, name, dataset of one artefact ("?" where unknown)."""
    if info.kind == TOKENS:
        key = info.meta.key if info.meta else None
        return [key.kind, key.backbone, "-", key.dataset] if key else ["tokens", "?", "-", "?"]
    return [info.kind, *(str(info.info.get(field, "?")) for field in ("backbone", "name", "dataset"))]


def _not_a_cache(store: ActivationStore) -> int | None:
    """Exit code 2, after saying so, when the root holds files but no scopebench artefact."""
    if store.root_state() != "foreign":
        return None
    print(f"{store.root} is not a scopebench cache: it holds no token entries, trained SAEs or analysis memos "
          f"(pass the folder given to --cache-dir or ${CACHE_ENV})", file=sys.stderr)
    return 2


def _cache_ls(args: argparse.Namespace) -> int:
    store = _store(args)
    refused = _not_a_cache(store)
    if refused is not None:
        return refused
    infos = [store.inspect(kind, path) for kind, path in store.find()]
    if not infos:
        print(f"no cache entries under {store.root}")
        return 0
    rows = [[info.digest[:12], *_columns(info), _shape(info), _human_bytes(_disk_bytes(info.path)), _status(info)]
            for info in infos]
    print(tabulate(rows, headers=["key", "kind", "backbone", "name", "dataset", "shape", "size", "status"]))
    for info in infos:
        if info.problem:
            print(f"\n{info.digest[:12]}: {info.problem}")
    return 0


def _note(info: EntryInfo) -> str:
    """What ``verify`` adds after "ok" for an artefact that is not (yet) sealed."""
    if info.legacy:
        return "  legacy (written before artefacts were sealed): never read; clear it to free its space"
    if info.kind != TOKENS:
        return "" if info.sealed else "  unsealed (its build stopped before sealing it): rebuilt on next use"
    if info.meta is not None and not info.meta.complete:
        return "  incomplete: re-run its extraction to resume it"
    return "" if info.sealed else "  unsealed: re-run its extraction to verify and seal it"


def _cache_verify(args: argparse.Namespace) -> int:
    store = _store(args)
    state = store.root_state()
    if state == "missing":
        print(f"no scopebench cache at {store.root}: the folder does not exist", file=sys.stderr)
        return 2
    refused = _not_a_cache(store)
    if refused is not None:
        return refused
    targets = store.find(args.key or "")
    if args.key and not targets:
        print(f"no cache entry under {store.root} matches {args.key!r}", file=sys.stderr)
        return 2
    if not targets:
        print(f"no entries under {store.root} (an empty cache): nothing to verify")
        return 0
    bad = 0
    for kind, path in targets:
        info = store.inspect(kind, path, checksum=True)
        label = " ".join(c for c in _columns(info) if c not in ("-", "?"))
        if info.problem is not None:
            bad += 1
            print(f"BAD  {info.digest[:12]}  {label}: {info.problem}")
        else:
            print(f"ok   {info.digest[:12]}  {label}{_note(info)}")
    print(f"{len(targets)} entries checked, {bad} bad" + (
        f"; delete bad entries with `scopebench cache clear KEY --cache-dir {store.root}`" if bad else ""))
    return 1 if bad else 0


def _cache_clear(args: argparse.Namespace) -> int:
    store = _store(args)
    refused = _not_a_cache(store)
    if refused is not None:
        return refused
    targets = store.find(args.key or "")
    if not targets:
        where = f"matches {args.key!r}" if args.key else "exists"
        print(f"no cache entry under {store.root} {where}; nothing to clear")
        return 0 if not args.key else 2
    if not args.yes:
        print(f"about to delete {len(targets)} entries under {store.root}:")
        for kind, path in targets:
            print(f"  {path.name[:12]}  {kind}")
        try:
            answer = input("delete them? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("aborted; nothing deleted (pass --yes to skip this question)")
            return 1
    busy = 0
    for _, path in targets:
        try:
            store.remove(path)
            print(f"deleted {path.name[:12]}")
        except Timeout:
            busy += 1
            print(f"skipped {path.name[:12]}: a writer holds its lock (extraction or SAE training running, or a "
                  f"bench session reading it); retry when it ends", file=sys.stderr)
    return 1 if busy else 0


def register_cache(subparsers: argparse._SubParsersAction) -> None:
    """``scopebench cache ls | verify | clear``."""
    cache = subparsers.add_parser("cache", help="inspect, verify or clear the activation cache")
    commands = cache.add_subparsers(dest="cache_command", required=True, metavar="{ls,verify,clear}")

    def add(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--cache-dir", type=Path, default=None,
                            help=f"cache root (default: ${CACHE_ENV}, else ~/.cache/scopebench)")
        parser.set_defaults(handler=handler)
        return parser

    add("ls", "list token entries, trained SAEs and memos: key, kind, backbone, name, dataset, shape, size, status",
        _cache_ls)
    verify = add("verify", "check every sealed file's size and sha256 (and shard headers); exit 1 if any entry is "
                           "bad, 2 if the folder is not a cache", _cache_verify)
    verify.add_argument("key", nargs="?", metavar="KEY-PREFIX", help="only entries whose hash starts with this")
    clear = add("clear", "delete entries: token entries, SAEs, memos (all, or those matching KEY-PREFIX)",
                _cache_clear)
    clear.add_argument("key", nargs="?", metavar="KEY-PREFIX", help="only entries whose hash starts with this")
    clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    register_backbones, register_weights, register_claims, register_recipes, register_leaderboard, register_quantities,
    register_regression, register_submit, register_cache, register_plan,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scopebench", description="Information-scope benchmark of SAEs on ViTs.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scopebench`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
