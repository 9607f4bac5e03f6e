"""`podunit generate` and `podunit validate` (spec §2): the command line of the generator.

The work is toolkit.unitgen.generator's, which the systemd generator
(generators/podunit-generator) runs without argparse.
"""

from __future__ import annotations

import os
import sys

from toolkit.definitions.search import search_dirs
from toolkit.errors import PodunitError
from toolkit.unitgen.generator import (
    GeneratorLog,
    describe,
    dry_run_text,
    generate,
    podunit_executable,
    write_all,
)
from toolkit.unitgen.shadow import InstalledUnits

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import argparse


def cli_generate(args: argparse.Namespace) -> int:
    """`podunit generate [--dry-run] [OUTPUT_DIR]`: print or write every unit (spec §2).

    The units' plan paths are under OUTPUT_DIR, also in a dry run; without it,
    under systemd's normal generator directory (`default_output_dir`).
    """
    dry_run = args.dry_run or args.output_dir is None
    rendered, errors = generate(  # a dry run shows the units as written to OUTPUT_DIR
        user=args.user, podunit=podunit_executable(), output_dir=args.output_dir
    )
    for error in errors:
        print(describe(error), file=sys.stderr)
    if dry_run:
        sys.stdout.write(dry_run_text(rendered))
        return 1 if errors else 0
    output_dir = args.output_dir
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise PodunitError(f"cannot create {output_dir}: {error.strerror}") from None
    log = GeneratorLog("podunit", kmsg=None)
    units = [(u.files, u.symlinks, u.plans) for u in rendered.values()]
    failures = write_all(output_dir, units, log)
    return 1 if errors or failures else 0


def cli_validate(args: argparse.Namespace) -> int:
    """`podunit validate [PATH...]`: print only problems, `FILE:LINE:COLUMN: message`."""
    from toolkit.definitions.loader import load_all, load_paths
    from toolkit.unitgen.render import render_all

    if args.paths:
        loaded = load_paths(args.paths)
    else:
        loaded = load_all(search_dirs(user=args.user), user=args.user)
    _, errors = render_all(
        loaded.containers,
        podunit="/usr/bin/podunit",  # any absolute path: validation does not write units
        user=args.user,
        sources=loaded.sources,
        installed=InstalledUnits.of_mode(user=args.user).names(),
        notes=loaded.notes,
        projects=loaded.projects,
    )
    for error in [*loaded.errors, *errors]:
        print(describe(error))
    return 1 if loaded.errors or errors else 0
