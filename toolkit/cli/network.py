"""`podunit network create|ls|inspect|rm|prune` (docs/podunit-runtime.md, Networking)."""

from __future__ import annotations

import argparse
import json

from toolkit.network import manage
from toolkit.storage.paths import RuntimePaths
from toolkit.storage.state import StateStore


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a bridge network")
    create.add_argument("--subnet", help="IPv4 subnet, e.g. 10.91.0.0/24 (default: chosen)")
    create.add_argument("--gateway", help="the bridge's address (default: the first one)")
    create.add_argument("--internal", action="store_true", help="no traffic to the outside")
    create.add_argument("--disable-dns", action="store_true", help="no aardvark-dns names")
    create.add_argument("name", metavar="NAME")
    ls = actions.add_parser("ls", help="list networks")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    inspect = actions.add_parser("inspect", help="show networks as JSON")
    inspect.add_argument("--format", choices=["json"], default="json")
    inspect.add_argument("names", nargs="+", metavar="NAME")
    rm = actions.add_parser("rm", help="remove networks no container uses")
    rm.add_argument("names", nargs="+", metavar="NAME")
    prune = actions.add_parser("prune", help="remove every unused network but the default")
    prune.add_argument("--format", choices=["table", "json"], default="table")


def cli_network(args: argparse.Namespace) -> int:
    with StateStore(RuntimePaths.for_mode(args.user)) as store:
        if args.action == "create":
            network = manage.create(
                store, args.name, subnet=args.subnet, gateway=args.gateway,
                internal=args.internal, dns=not args.disable_dns,
            )  # fmt: skip
            print(network["name"])
        elif args.action == "ls":
            listing = manage.listing(store)
            if args.format == "json":
                print(json.dumps(listing, indent=2))
            else:
                print(f"{'NAME':<20} {'SUBNET':<18} {'GATEWAY':<15} {'BRIDGE':<10} CONTAINERS")
                for n in listing:
                    print(f"{n['name']:<20} {n['subnet']:<18} {n['gateway']:<15} "
                          f"{n['interface']:<10} {len(n['containers'])}")  # fmt: skip
        elif args.action == "inspect":
            print(json.dumps([manage.inspect(store, name) for name in args.names], indent=2))
        elif args.action == "rm":
            for name in args.names:
                manage.remove(store, name)
                print(name)
        else:
            removed = manage.prune(store)
            print(json.dumps(removed) if args.format == "json" else "\n".join(removed))
    return 0
