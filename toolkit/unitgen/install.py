"""`podunit install-generators`: hook an installed podunit (a wheel in a venv, or a system
install as a distribution package makes it) into systemd, without a checkout.

systemd runs generators from fixed directories (systemd.generator(7)); this writes
small launchers there that start *this* installation's interpreter, and installs the
unit files shipped in the package (`units/` of the source tree):

    PREFIX/lib/systemd/system-generators/podunit-generator
    PREFIX/lib/systemd/user-generators/podunit-user-generator
    PREFIX/lib/systemd/system/<the shipped units>   `@PODUNIT@` replaced by HOME/lib/podunit/podunit
    PREFIX/lib/systemd/user/<the shipped units>     ... by `HOME/lib/podunit/podunit --user`
    HOME/lib/podunit/podunit        what generated units run (ExecStart=...)

HOME is the installation's own data directory, where the wheel's data files went
(`lib/podunit/units`, `share/doc/podunit`): the venv for a venv, /usr/local for a
system `pip install`, /usr for a distribution package; so the units of a venv's
podunit run a launcher inside that venv.

Every launcher is `#!PYTHON -I -S` with the installation's import directories put on
`sys.path` by hand, as the checkout's generators/ and bin/podunit do: no site
processing (.pth files) on the boot path or in every unit start, and neither the
current directory nor PYTHONPATH can change what runs. PREFIX defaults to
/usr/local (the admin's, systemd looks there); `--root DIR` writes below DIR with
the paths as they will be at PREFIX (for packagers, as DESTDIR).

The package's own files are found through its installed metadata
(importlib.metadata's RECORD), so the same code works for a venv, a `--prefix`
install and a checkout (whose units/ directory is used).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from toolkit.errors import PodunitError

PLACEHOLDER = "@PODUNIT@"  # in shipped unit files: the podunit executable's absolute path
# What the launchers need importable: podunit itself, PyYAML (the generator), pystemd
# (cgroups: enabled) and systemd-python (podunit logs). A missing optional one is skipped.
PACKAGES = ("toolkit", "yaml", "_yaml", "pystemd", "systemd")
REQUIRED = ("toolkit", "yaml")
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target")

LAUNCHER = '''\
#!{python} -IS
"""{what}: written by `podunit install-generators` for the podunit in {home}.

Started with -I -S (no site processing: faster, and nothing from the environment or
the current directory is imported); the installation's directories are put on
sys.path by hand. Run `podunit install-generators` again after moving it.
"""

import sys

{prelude}sys.path[:0] = {paths!r}

from {module} import {function}  # noqa: E402

sys.exit({call})
'''


def import_paths(packages: Sequence[str] = PACKAGES) -> list[str]:
    """The directories that hold `packages` (each once, in order), found without
    importing them. A missing required package is a `PodunitError`."""
    from importlib.util import find_spec

    paths: list[str] = []
    for name in packages:
        spec = find_spec(name)
        if spec is None or not (spec.origin or spec.submodule_search_locations):
            if name in REQUIRED:
                raise PodunitError(f"cannot find the {name!r} package of this installation")
            continue
        location = (
            next(iter(spec.submodule_search_locations))
            if spec.submodule_search_locations
            else str(spec.origin)
        )
        directory = os.path.dirname(os.path.abspath(location))
        if directory not in paths:
            paths.append(directory)
    return paths


def launcher(
    what: str, module: str, function: str, call: str, *, python: str, paths: Sequence[str]
) -> str:
    """The text of one launcher (see LAUNCHER)."""
    home = os.path.dirname(os.path.dirname(python)) if "/bin/" in python else python
    # podunit's: the garbage collector off from the first import, as in bin/podunit
    prelude = "import gc\n\ngc.disable()\n" if module == "toolkit.cli.main" else ""
    return LAUNCHER.format(
        python=python, what=what, home=home, paths=list(paths), module=module,
        function=function, call=call, prelude=prelude,
    )  # fmt: skip


def shipped_units() -> dict[str, str]:
    """The unit files shipped with this installation: file name -> path (the wheel's data
    files `lib/podunit/units/*`, or a checkout's `units/`)."""
    found: dict[str, str] = {}
    try:
        from importlib.metadata import PackageNotFoundError, files

        for entry in files("podunit") or ():
            parts = entry.parts
            if len(parts) >= 2 and parts[-2] == "units" and parts[-1].endswith(UNIT_SUFFIXES):
                found[parts[-1]] = str(entry.locate())
    except PackageNotFoundError:
        pass
    checkout = os.path.join(os.path.dirname(_package_dir()), "units")  # beside toolkit/
    if not found and os.path.isdir(checkout):
        for name in sorted(os.listdir(checkout)):
            if name.endswith(UNIT_SUFFIXES):
                found[name] = os.path.join(checkout, name)
    return found


def console_entry_point() -> tuple[str, str]:
    """(module, function) of the `podunit` console script, as the package declares it."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="console_scripts", name="podunit"):
        module, _, function = entry.value.partition(":")
        if module.startswith("toolkit.") and function.isidentifier():
            return module, function
    raise PodunitError("the podunit package declares no 'podunit' console script")


def _package_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # toolkit/


def installation_home() -> str:
    """Where this installation's data files are (see module docstring): found from the
    installed units' paths, else the data directory of the running interpreter's scheme
    (a venv, /usr/local)."""
    for path in shipped_units().values():
        parts = path.split("/")
        if parts[-3:-1] == ["podunit", "units"] and parts[-4:-3] == ["lib"]:
            return "/".join(parts[:-4]) or "/"
    import sysconfig

    return os.path.normpath(sysconfig.get_path("data"))


def plan(
    prefix: str = "/usr/local", *, python: str = sys.executable, home: str | None = None
) -> dict[str, str]:
    """Every file to write (absolute path -> content)."""
    if not os.path.isabs(prefix):
        raise PodunitError(f"--prefix {prefix!r} must be an absolute path")
    prefix = os.path.normpath(prefix)
    python = os.path.abspath(python)
    paths = import_paths()
    podunit = f"{os.path.normpath(home or installation_home())}/lib/podunit/podunit"
    module, function = console_entry_point()
    files = {
        podunit: launcher(
            "podunit, as generated units run it", module, function, f"{function}()",
            python=python, paths=paths,
        ),
    }  # fmt: skip
    for user, directory, name in (
        (False, "system-generators", "podunit-generator"),
        (True, "user-generators", "podunit-user-generator"),
    ):
        call = f"generator_main(sys.argv[1:], user={user}, podunit={podunit!r})"
        files[f"{prefix}/lib/systemd/{directory}/{name}"] = launcher(
            f"podunit's systemd {'user ' if user else ''}generator (systemd.generator(7))",
            "toolkit.unitgen.generator", "generator_main", call, python=python, paths=paths,
        )  # fmt: skip
    for name, source in shipped_units().items():
        with open(source, encoding="utf-8") as unit:
            text = unit.read()
        # As scripts/install-generator does from a checkout: the user manager's copy
        # runs `podunit --user`.
        files[f"{prefix}/lib/systemd/system/{name}"] = text.replace(PLACEHOLDER, podunit)
        files[f"{prefix}/lib/systemd/user/{name}"] = text.replace(PLACEHOLDER, f"{podunit} --user")
    return files


def install(
    prefix: str = "/usr/local", *, root: str = "/", python: str = sys.executable,
    home: str | None = None,
) -> list[str]:  # fmt: skip
    """Write the launchers (mode 0755) and units (0644) below `root`; returns their paths
    (as they will be, without `root`). Existing files are replaced atomically."""
    written = []
    for path, text in plan(prefix, python=python, home=home).items():
        target = os.path.join(root, path.lstrip("/"))
        executable = "/lib/systemd/system/" not in path and "/lib/systemd/user/" not in path
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            temporary = f"{target}.podunit-new"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with open(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.chmod(temporary, 0o755 if executable else 0o644)
            os.rename(temporary, target)
        except OSError as error:
            raise PodunitError(
                f"cannot write {target}: {error.strerror}",
                hint="run as root, or give --prefix/--root a writable directory",
            ) from None
        written.append(path)
    return written


def uninstall(prefix: str = "/usr/local", *, root: str = "/", home: str | None = None) -> list[str]:
    """Remove what `install` wrote (the shipped units by name); returns what was removed."""
    removed = []
    for path in plan(prefix, home=home):
        target = os.path.join(root, path.lstrip("/"))
        try:
            os.unlink(target)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise PodunitError(f"cannot remove {target}: {error.strerror}") from None
        removed.append(path)
    return removed
