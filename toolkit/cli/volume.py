"""`podunit volume create|ls|inspect|rm|prune` (docs/podunit-runtime.md, Volumes).

The store is `toolkit.storage.volumes`; a volume is in use while a container record
lists it, and `rm` refuses such a volume (as Docker and Podman do).
"""

from __future__ import annotations

import argparse
import json
import os

from toolkit.errors import PodunitError
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.state import StateStore
from toolkit.storage.volumes import DRIVER, VolumeNotFound, VolumeStore


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a volume")
    create.add_argument("--driver", "-d", default=DRIVER, help="only 'local'")
    create.add_argument("--opt", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="type=none,o=bind,device=PATH or type=tmpfs,o=size=64m")  # fmt: skip
    create.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE")
    create.add_argument("name", nargs="?", metavar="NAME", help="default: a random name")
    ls = actions.add_parser("ls", help="list volumes")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.add_argument("--quiet", "-q", action="store_true", help="names only")
    inspect = actions.add_parser("inspect", help="show volumes as JSON")
    inspect.add_argument("--format", choices=["json"], default="json")
    inspect.add_argument("names", nargs="+", metavar="NAME")
    rm = actions.add_parser("rm", help="remove volumes no container uses")
    rm.add_argument("--force", "-f", action="store_true", help="no error for a missing volume")
    rm.add_argument("names", nargs="+", metavar="NAME")
    prune = actions.add_parser("prune", help="remove unused anonymous volumes")
    prune.add_argument("--all", "-a", action="store_true", help="every unused volume")
    prune.add_argument("--format", choices=["table", "json"], default="table")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise PodunitError(f"invalid {what} {item!r}", hint=f"write {what} KEY=VALUE")
        result[key] = value
    return result


def _create_settings(opts: dict[str, str]) -> tuple[str, str | None, tuple[str, ...]]:
    """`--opt` as in `docker volume create`: (kind, device, options)."""
    unknown = set(opts) - {"type", "o", "device"}
    if unknown:
        raise PodunitError(f"unknown volume option {sorted(unknown)[0]!r}",
                           hint="the local driver takes type, o and device")  # fmt: skip
    if not opts:
        return "directory", None, ()
    kind = opts.get("type", "")
    words = tuple(word for word in opts.get("o", "").split(",") if word)
    if kind in ("none", "bind") and {"bind", "rbind"} & set(words):
        device = opts.get("device")
        if not device:
            raise PodunitError("a bind volume needs --opt device=PATH")
        rest = tuple(word for word in words if word not in ("bind", "rbind"))
        return "bind", os.path.abspath(device), rest
    if kind == "tmpfs":
        return "tmpfs", None, words
    raise PodunitError(
        f"volume type {kind!r} is not supported by podunit",
        hint="use --opt type=none --opt o=bind --opt device=PATH, or --opt type=tmpfs",
    )


def cli_volume(args: argparse.Namespace) -> int:
    with StateStore(RuntimePaths.for_mode(args.user)) as store:
        volumes = VolumeStore(store)
        if args.action == "create":
            if args.driver != DRIVER:
                raise PodunitError(
                    f"volume driver {args.driver!r} is not supported by podunit (only 'local')",
                    hint="mount network storage on the host and use --opt type=none,o=bind",
                )
            kind, device, options = _create_settings(_pairs(args.opt, "--opt"))
            record = volumes.create(args.name, kind=kind, device=device, options=options,
                                    labels=_pairs(args.label, "--label"))  # fmt: skip
            print(record.name)
        elif args.action == "ls":
            used = volumes.users_by_volume()
            listing = [v.describe(used.get(v.name, ())) for v in volumes.all()]
            if args.format == "json":
                print(json.dumps(listing, indent=2))
            elif args.quiet:
                for entry in listing:
                    print(entry["Name"])
            else:
                print(f"{'DRIVER':<8} {'VOLUME NAME':<40} USED BY")
                for entry in listing:
                    print(f"{entry['Driver']:<8} {entry['Name']:<40} {','.join(entry['UsedBy'])}")
        elif args.action == "inspect":
            used = volumes.users_by_volume()
            described = [volumes.get(name) for name in args.names]
            print(json.dumps([v.describe(used.get(v.name, ())) for v in described], indent=2))
        elif args.action == "rm":
            for name in args.names:
                try:
                    volumes.remove(name)
                except VolumeNotFound:
                    if not args.force:
                        raise
                    continue
                print(name)
        else:
            removed = volumes.prune(everything=args.all)
            if args.format == "json":
                print(json.dumps(removed))
            for name in removed if args.format != "json" else ():
                print(name)
    return 0
