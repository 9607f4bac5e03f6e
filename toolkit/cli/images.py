"""`podunit pull|images|rmi|image|build` (spec §4; docs/podunit-exec-logs-images.md).

The store is `toolkit.storage.images` (pulls, policies) and
`toolkit.storage.image_catalog` (listing, in use, removal); builds are
`toolkit.runtime.builds`. An image is in use while a container record's root is
its unpacked root; `rmi` refuses it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from toolkit.errors import PodunitError
from toolkit.storage.paths import RuntimePaths


def add_pull_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy", choices=["always", "missing", "newer", "never"], default="always",
        help="when to fetch (default always; a pull unit passes the container's)",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on a terminal")
    p.add_argument("images", nargs="+", metavar="IMAGE")


def add_images_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("-q", "--quiet", action="store_true", help="references only")


def add_rmi_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")


def add_image_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="list images (as podunit images)")
    add_images_arguments(ls)
    inspect = actions.add_parser("inspect", help="show images as JSON")
    inspect.add_argument("--format", choices=["json"], default="json")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    rm = actions.add_parser("rm", help="remove images no container uses (as podunit rmi)")
    add_rmi_arguments(rm)
    prune = actions.add_parser("prune", help="remove unpacked roots no container uses")
    prune.add_argument("-a", "--all", action="store_true", help="also images no container uses")
    prune.add_argument("--format", choices=["table", "json"], default="table")
    pull = actions.add_parser("pull", help="as podunit pull")
    add_pull_arguments(pull)


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", metavar="FILE", help="the container of a generated unit's plan")
    p.add_argument("--force", action="store_true", help="build even if the context is unchanged")
    p.add_argument("name", metavar="NAME")


def _paths(args: argparse.Namespace) -> RuntimePaths:
    return RuntimePaths.for_mode(bool(args.user))


def _users(paths: RuntimePaths) -> dict[str, list[str]]:
    from toolkit.storage.image_catalog import users_by_digest
    from toolkit.storage.state import StateStore

    with StateStore(paths) as state:
        return users_by_digest(state.all())


def cli_pull(args: argparse.Namespace) -> int:
    """`podunit pull [--policy P] IMAGE...`: prints each image's manifest digest."""
    from toolkit.definitions.model import PullPolicy
    from toolkit.runtime.pulling import reporter
    from toolkit.storage.images import fetch_image

    paths = _paths(args)
    for image in args.images:
        policy, report = PullPolicy(args.policy), reporter(quiet=args.quiet)
        digest, _ = fetch_image(image, paths.state_dir, policy=policy, report=report)
        print(digest)
    return 0


def _table(images: list[dict[str, Any]]) -> str:
    rows = [("REFERENCE", "DIGEST", "UPDATED", "ROOT SIZE", "CONTAINERS")]
    for image in images:
        updated = image["Updated"]
        rows.append((
            str(image["Reference"]),
            str(image["Digest"])[7:19],
            time.strftime("%Y-%m-%d %H:%M", time.localtime(updated)) if updated else "-",
            f"{image['RootfsSize'] / 1e6:.1f} MB" if image["Unpacked"] else "-",
            ",".join(image["Containers"]) or "-",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        + "\n"
        for row in rows
    )


def cli_images(args: argparse.Namespace) -> int:
    """`podunit images [--format json] [-q]`."""
    from toolkit.storage.image_catalog import list_images
    from toolkit.storage.images import ImageStore

    paths = _paths(args)
    images = list_images(ImageStore.under(paths.state_dir), _users(paths))
    if args.format == "json":
        json.dump(images, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.quiet:
        sys.stdout.write("".join(f"{image['Reference']}\n" for image in images))
    else:
        sys.stdout.write(_table(images))
    return 0


def cli_rmi(args: argparse.Namespace) -> int:
    """`podunit rmi IMAGE...`: every image is tried; the status is 125 if any failed."""
    from toolkit.storage.image_catalog import remove_image
    from toolkit.storage.images import ImageStore

    paths = _paths(args)
    store, users = ImageStore.under(paths.state_dir), _users(paths)
    failed: PodunitError | None = None
    for image in args.images:
        try:
            removed = remove_image(store, image, users)
        except PodunitError as error:
            if failed is not None:
                print(f"podunit: {error}", file=sys.stderr)
            failed = failed or error
            continue
        print(f"{removed['Reference']} {removed['Digest']}")
    if failed is not None:
        raise failed
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from toolkit.storage.image_catalog import find_image
    from toolkit.storage.images import ImageStore

    paths = _paths(args)
    store, users = ImageStore.under(paths.state_dir), _users(paths)
    result = []
    for text in args.images:
        image = find_image(store, text)
        image["Containers"] = sorted(users.get(image["Digest"], []))
        manifest = store.blob(image["Digest"])
        image["Layers"] = [
            {"Digest": layer.get("digest"), "Size": layer.get("size")}
            for layer in manifest.get("layers", [])
        ]
        config = store.blob(str((manifest.get("config") or {}).get("digest")))
        image["Config"] = config.get("config") or {}
        image["Created"] = config.get("created")
        result.append(image)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cli_image(args: argparse.Namespace) -> int:
    """`podunit image ls|inspect|rm|prune|pull`."""
    if args.action == "ls":
        return cli_images(args)
    if args.action == "inspect":
        return _inspect(args)
    if args.action == "rm":
        return cli_rmi(args)
    if args.action == "pull":
        return cli_pull(args)
    from toolkit.storage.image_catalog import prune
    from toolkit.storage.images import ImageStore

    paths = _paths(args)
    removed = prune(ImageStore.under(paths.state_dir), _users(paths), everything=args.all)
    if args.format == "json":
        print(json.dumps(removed))
    else:
        sys.stdout.write("".join(f"{item}\n" for item in removed))
    return 0


def cli_build(args: argparse.Namespace) -> int:
    """`podunit build [--plan FILE] [--force] NAME` (a build unit's ExecStart, or a shell's)."""
    from toolkit.runtime.builds import ensure_built

    if args.plan:
        from toolkit.definitions.plan import container_from_plan

        container = container_from_plan(args.plan, args.name)
    else:
        from toolkit.definitions import loader

        container = loader.find_definition(args.name, user=bool(args.user))
    if container.build is None:
        raise PodunitError(f"container {args.name!r} has no 'build:'")
    built = ensure_built(container, _paths(args).state_dir, force=args.force)
    print(f"{container.image}: {'built' if built else 'up to date (context unchanged)'}")
    return 0


def add_auto_update_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="only report which would be updated")
    p.add_argument("--rollback", dest="rollback", action="store_true", default=True,
                   help="restore the previous image when the new one fails (default)")  # fmt: skip
    p.add_argument("--no-rollback", dest="rollback", action="store_false")
    p.add_argument("--format", choices=["table", "json"], default="table")


def cli_auto_update(args: argparse.Namespace) -> int:
    """`podunit auto-update [--dry-run] [--rollback|--no-rollback] [--format json]`."""
    from toolkit.definitions.loader import load_all
    from toolkit.definitions.search import search_dirs
    from toolkit.runtime.autoupdate import auto_update, systemctl_runner
    from toolkit.unitgen.generator import podunit_executable

    user = bool(args.user)
    loaded = load_all(search_dirs(user=user), user=user)
    paths = _paths(args)
    report = auto_update(
        [loaded.containers[name] for name in sorted(loaded.containers)],
        state_dir=paths.state_dir,
        systemctl=systemctl_runner(user=user),
        podunit=[podunit_executable(), *(["--user"] if user else [])],
        dry_run=args.dry_run,
        rollback=args.rollback,
        users=lambda: _users(paths),
    )
    if args.format == "json":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for entry in report:
            detail = entry.get("Reason") or entry.get("Checked") or ""
            line = f"{entry['Unit']}  {entry['Image']}  {entry['Updated']}"
            rollback = entry.get("Rollback")
            sys.stdout.write(line + (f"  ({detail})" if detail else "")
                             + (f"  rollback: {rollback}" if rollback else "") + "\n")  # fmt: skip
    return 1 if any(entry["Updated"] == "failed" for entry in report) else 0
