"""`podunit install-generators [--prefix DIR] [--root DIR] [--uninstall]` (README, "Installing").

The work is in `toolkit.unitgen.install`; this prints what was written or removed.
"""

from __future__ import annotations

import argparse

from toolkit.unitgen import install


def cli_install_generators(args: argparse.Namespace) -> int:
    if args.uninstall:
        for path in install.uninstall(args.prefix, root=args.root):
            print(f"removed {path}")
        return 0
    for path in install.install(args.prefix, root=args.root):
        print(f"installed {path}")
    print("run 'systemctl daemon-reload' to run the generators")
    return 0
