"""The `podunit` command line (spec §4).

This module only parses arguments and turns `PodunitError` into a one-line
message and an exit code; each verb's work lives in the module named in
`HANDLERS`, imported lazily so that a verb pays only for what it uses.

The argument forms that generated units run (`fast_arguments`) are recognised
without argparse: with the locale, gettext and shutil it pulls in, argparse
costs every unit start and stop about 8 ms; anything else goes through it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from toolkit.errors import EXIT_PODUNIT_ERROR, PodunitError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import argparse
    from typing import Any, NoReturn

    Handler = Callable[[argparse.Namespace], int]

# verb -> "module:function"; the function takes the parsed arguments, returns an exit status.
HANDLERS: dict[str, str] = {
    "generate": "toolkit.cli.generate:cli_generate",
    "validate": "toolkit.cli.generate:cli_validate",
    "run": "toolkit.cli.containers:cli_run",
    "create": "toolkit.cli.containers:cli_create",
    "start": "toolkit.cli.containers:cli_start",
    "stop": "toolkit.cli.containers:cli_stop",
    "kill": "toolkit.cli.containers:cli_kill",
    "rm": "toolkit.cli.containers:cli_rm",
    "pause": "toolkit.cli.containers:cli_pause",
    "unpause": "toolkit.cli.containers:cli_unpause",
    "ps": "toolkit.cli.containers:cli_ps",
    "inspect": "toolkit.cli.containers:cli_inspect",
    "wait": "toolkit.cli.containers:cli_wait",
    "logs": "toolkit.cli.logs:cli_logs",
    "exec": "toolkit.cli.exec:cli_exec",
    "checkpoint": "toolkit.cli.containers:cli_checkpoint",
    "restore": "toolkit.cli.containers:cli_restore",
    "cleanup": "toolkit.cli.containers:cli_cleanup",
    "network": "toolkit.cli.network:cli_network",
    "volume": "toolkit.cli.volume:cli_volume",
    "pull": "toolkit.cli.images:cli_pull",
    "images": "toolkit.cli.images:cli_images",
    "rmi": "toolkit.cli.images:cli_rmi",
    "image": "toolkit.cli.images:cli_image",
    "build": "toolkit.cli.images:cli_build",
    "install-generators": "toolkit.cli.install:cli_install_generators",
    "healthcheck": "toolkit.cli.healthcheck:cli_healthcheck",
    "auto-update": "toolkit.cli.images:cli_auto_update",
}


def _names(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    p.add_argument("names", nargs="+" if many else None, metavar="NAME")


class _Skipped:
    """Stands in for the parser of a verb that is not being invoked.

    Building all 20 sub-parsers costs about 20 ms per process, paid by every unit
    start; `main` builds only the invoked verb's (the whole grammar for help and errors).
    """

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        return None

    def add_subparsers(self, *args: Any, **kwargs: Any) -> _Skipped:
        return self

    def add_parser(self, *args: Any, **kwargs: Any) -> _Skipped:
        return self


class _OnlyVerb:
    """The sub-parsers action, building only `only`'s parser (all of them when None)."""

    def __init__(self, verbs: Any, only: str | None) -> None:
        self._verbs = verbs
        self._only = only

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if self._only in (None, name):
            return self._verbs.add_parser(name, **kwargs)
        return _Skipped()


GLOBAL_OPTIONS_WITH_VALUE = frozenset({"--log-level"})


def invoked_verb(argv: Sequence[str]) -> str | None:
    """The verb of `argv` if it is a known one and no top-level help is asked for."""
    words = iter(argv)
    for word in words:
        if word in GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in HANDLERS else None
        elif word in ("-h", "--help"):
            return None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument grammar of `podunit` (spec §4): all verbs, or just `only`."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        """argparse, but a usage error exits 125 like every error of podunit (spec §4)."""

        def error(self, message: str) -> NoReturn:
            self.print_usage(sys.stderr)
            self.exit(EXIT_PODUNIT_ERROR, f"podunit: error: {message}\n")

    parser = _Parser(prog="podunit", description="containers as systemd services")
    parser.add_argument("--user", action="store_true", help="use the per-user directories")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"],
        help="debug: log every external command line (and conmon's debug messages)",
    )  # fmt: skip
    from toolkit import __version__

    parser.add_argument("--version", action="version", version=f"podunit {__version__}")
    verbs: Any = _OnlyVerb(parser.add_subparsers(dest="verb", required=True, metavar="VERB"), only)

    p = verbs.add_parser("generate", help="print or write the units for all definitions")
    p.add_argument("--dry-run", action="store_true", help="print units instead of writing them")
    p.add_argument("output_dir", nargs="?", help="write units here (default: print)")
    # `--user` also after the verb (`podunit generate --dry-run --user`); SUPPRESS keeps
    # a global `podunit --user generate` from being reset by this option's default.
    p.add_argument("--user", action="store_true", default=argparse.SUPPRESS, help="user units")

    p = verbs.add_parser("validate", help="check definitions, print only problems")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--user", action="store_true", default=argparse.SUPPRESS, help="user paths")

    for verb, text in (("run", "create and start a container"), ("create", "create a container")):
        p = verbs.add_parser(verb, help=text)
        p.add_argument("--plan", metavar="FILE", help="the container of a generated unit's plan")
        p.add_argument("--unit", action="store_true",
                       help="run as a systemd unit's ExecStart (implied by --plan): notify"
                            " systemd, hand it conmon as the main process, detach")  # fmt: skip
        p.add_argument("--rootfs", help="ad-hoc container: use this directory as root file system")
        p.add_argument("--name", help="ad-hoc container: its name")
        p.add_argument("-d", "--detach", action="store_true", help="do not wait for the container")
        p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
        p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
        p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
        p.add_argument("--network", help="bridge (default), none, host or a network name")
        p.add_argument("--runtime", help="runc or crun")
        p.add_argument("--cgroups", choices=["split", "enabled", "disabled"])
        p.add_argument("--log-driver", choices=["journald", "k8s-file", "passthrough", "none"])
        p.add_argument("--rm", action="store_true", help="remove the container when it exits")
        p.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:CTR[:ro]")
        p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CTR")
        p.add_argument("-w", "--workdir", help="working directory inside the container")
        p.add_argument("-u", dest="user_spec", metavar="USER[:GROUP]", help="user in the container")
        p.add_argument("target", help="definition name, or an image for an ad-hoc container")
        p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD... (ad-hoc only)")

    p = verbs.add_parser("start", help="start a created container")
    _names(p, many=True)
    p = verbs.add_parser("stop", help="stop with the stop signal, then SIGKILL after the timeout")
    p.add_argument("-t", "--time", type=float, help="seconds before SIGKILL")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("names", nargs="*", metavar="NAME")
    p = verbs.add_parser("kill", help="send a signal to the container")
    p.add_argument("-s", "--signal", default="SIGKILL")
    _names(p, many=True)
    p = verbs.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="stop a running container first")
    p.add_argument("-t", "--time", type=float, help="seconds before SIGKILL with -f")
    p.add_argument("-v", "--volumes", action="store_true", help="also its anonymous volumes")
    _names(p, many=True)
    for verb in ("pause", "unpause"):
        p = verbs.add_parser(verb, help=f"{verb} all processes of the container")
        _names(p, many=True)
    p = verbs.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="also stopped containers")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p = verbs.add_parser("inspect", help="show a container as JSON")
    p.add_argument("--format", choices=["json"], default="json")
    _names(p, many=True)
    p = verbs.add_parser("wait", help="wait for containers to exit, print exit codes")
    _names(p, many=True)
    p = verbs.add_parser("logs", help="show a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, metavar="N")
    _names(p)
    p = verbs.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-u", "--user", dest="exec_user", metavar="USER")
    p.add_argument("-w", "--workdir")
    p.add_argument("--list", action="store_true", help="list the container's exec sessions")
    p.add_argument("--stop", metavar="SESSION", help="stop a running exec session")
    p.add_argument("--rm", metavar="SESSION", help="remove an exec session")
    p.add_argument("-f", "--force", action="store_true", help="--rm: stop a running one first")
    p.add_argument("--time", type=float, help="--stop/--rm -f: seconds before SIGKILL")
    _names(p)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    p = verbs.add_parser("checkpoint", help="checkpoint a running container with CRIU")
    p.add_argument("--export", metavar="FILE")
    p.add_argument("--leave-running", action="store_true")
    _names(p)
    p = verbs.add_parser("restore", help="restore a checkpointed container")
    p.add_argument("--import", dest="import_file", metavar="FILE")
    _names(p)
    # conmon's --exit-command. No help= at all: argparse lists only verbs given a help
    # text, and help=SUPPRESS printed `==SUPPRESS==` in `podunit --help`.
    p = verbs.add_parser("cleanup")
    _names(p)
    p = verbs.add_parser(
        "install-generators",
        help="install systemd generator launchers and units for this installation",
    )
    p.add_argument(
        "--prefix", default="/usr/local", help="where systemd looks (default: %(default)s)"
    )
    p.add_argument("--root", default="/", help="write below this directory (packaging)")
    p.add_argument("--uninstall", action="store_true", help="remove what was installed")
    p = verbs.add_parser("network", help="bridge networks: create, ls, inspect, rm, prune")
    if p is not None and not isinstance(p, _Skipped):
        from toolkit.cli.network import add_arguments

        add_arguments(p)
    p = verbs.add_parser("volume", help="volumes: create, ls, inspect, rm, prune")
    if p is not None and not isinstance(p, _Skipped):
        from toolkit.cli.volume import add_arguments as add_volume_arguments

        add_volume_arguments(p)
    for verb, text, adder in (
        ("pull", "fetch images into podunit's image store", "add_pull_arguments"),
        ("images", "list the images of the store", "add_images_arguments"),
        ("rmi", "remove images no container uses", "add_rmi_arguments"),
        ("image", "images: ls, inspect, rm, prune, pull", "add_image_arguments"),
        ("build", "build a container's image (its build: section)", "add_build_arguments"),
        (
            "auto-update",
            "update opted-in containers' images, roll back on failure",
            "add_auto_update_arguments",
        ),
    ):
        p = verbs.add_parser(verb, help=text)
        if p is not None and not isinstance(p, _Skipped):
            from toolkit.cli import images as image_cli

            getattr(image_cli, adder)(p)
    p = verbs.add_parser("healthcheck", help="run a container's health check")
    checks = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = checks.add_parser("run", help="run the check once, record it; exit 0 healthy, 1 not")
    p.add_argument("--scheduled", action="store_true", help=argparse.SUPPRESS)  # the timer's
    _names(p)
    return parser


def _handler(verb: str) -> Handler:
    module_name, function_name = HANDLERS[verb].split(":")
    handler: Handler = getattr(importlib.import_module(module_name), function_name)
    return handler


_RUN_DEFAULTS: dict[str, object] = {
    "rootfs": None, "name": None, "detach": False, "interactive": False, "tty": False,
    "env": [], "network": None, "runtime": None, "cgroups": None, "log_driver": None,
    "rm": False, "volume": [], "publish": [], "workdir": None, "user_spec": None,
    "command": [], "unit": False,
}  # fmt: skip


_EXEC_DEFAULTS: dict[str, object] = {
    "interactive": False, "tty": False, "detach": False, "env": [], "exec_user": None,
    "workdir": None, "list": False, "stop": None, "rm": None, "force": False, "time": None,
}  # fmt: skip


def _word(text: str) -> bool:
    """A word argparse takes as a value or positional, never as an option."""
    return bool(text) and not text.startswith("-")


def fast_arguments(argv: Sequence[str]) -> argparse.Namespace | None:
    """The parsed arguments of the common forms, or None for anything else (argparse's).

    The forms in generated units: `[--user] run --plan FILE NAME`, `stop -t SECONDS
    NAME`, `rm -f NAME`, `kill -s SIGNAL NAME` (ExecReload), `cleanup ID` and
    `healthcheck run --scheduled NAME` (every health timer's run), exactly; and
    `[--user] exec NAME [--] CMD...` without options (the common interactive use,
    benchmarked against `podman exec`; argparse costs each 3-6 ms). The result equals argparse's
    (tests/unit/test_cli.py).
    """
    words = list(argv)
    user = words[:1] == ["--user"]
    if user:
        del words[0]
    values: dict[str, object] = {"user": user, "log_level": "warning"}
    match words:
        case ["run", "--plan", plan, name] if _word(plan) and _word(name):
            values |= {"verb": "run", **_RUN_DEFAULTS, "plan": plan, "target": name}
            values |= {"env": [], "volume": [], "publish": [], "command": []}  # fresh lists
        case ["stop", "-t", seconds, name] if _word(seconds) and _word(name):
            try:
                timeout = float(seconds)
            except ValueError:
                return None
            values |= {"verb": "stop", "time": timeout, "all": False, "names": [name]}
        case ["rm", "-f", name] if _word(name):
            values |= {"verb": "rm", "force": True, "time": None, "volumes": False,
                       "names": [name]}  # fmt: skip
        case ["kill", "-s", signal, name] if _word(signal) and _word(name):
            values |= {"verb": "kill", "signal": signal, "names": [name]}
        case ["exec", name, "--", first, *rest] | ["exec", name, first, *rest] if (
            _word(name) and _word(first)
        ):  # fmt: skip
            values |= {"verb": "exec", **_EXEC_DEFAULTS, "names": name, "command": [first, *rest]}
            values |= {"env": []}  # a fresh list
        case ["cleanup", container_id] if _word(container_id):
            values |= {"verb": "cleanup", "names": container_id}
        case ["healthcheck", "run", "--scheduled", name] if _word(name):
            values |= {"verb": "healthcheck", "action": "run", "scheduled": True, "names": name}
        case _:
            return None
    from types import SimpleNamespace  # what argparse.Namespace is, without argparse

    return SimpleNamespace(**values)  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `podunit` console script.

    A unit's own invocation or a plain exec (`fast_arguments`, argv from the command
    line) ends with `os._exit` once its output is flushed: the interpreter's orderly
    shutdown (module teardown, GC) costs each unit start and stop about 6 ms and has
    nothing to do here: files and the database are closed, children are not waited
    for, these verbs start no threads that must finish, and exec writes the command's
    output to fd 1 and 2 with os.write before it returns its exit code.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    fast = fast_arguments(arguments)
    if argv is None:
        _collect_garbage(fast is None)
    args = fast or build_parser(only=invoked_verb(arguments)).parse_args(arguments)
    code = _run(args)
    if fast is not None and argv is None:
        _exit_at_once(code)
    return code


def _collect_garbage(enabled: bool) -> None:
    """The cyclic garbage collector on or off for this process (`bin/podunit` starts with
    it off). Off for the fast forms: they are short-lived (exec lasts as long as its
    command) and end with `os._exit`, and the collections it runs while they import
    their modules, which only build long-lived objects, cost each unit start 2-4 ms
    (bench/RESULTS.md). On for everything else (`logs -f`, an attached `run`)."""
    import gc

    if enabled:
        gc.enable()
    else:
        gc.disable()


def _exit_at_once(code: int) -> NoReturn:
    """Flush stdout and stderr, then end the process without the interpreter's shutdown."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: the output is lost anyway
            code = code or EXIT_PODUNIT_ERROR
    os._exit(code)


def _run(args: argparse.Namespace) -> int:
    """The verb's handler; a `PodunitError` becomes one line (and a hint) and its exit code."""
    command = getattr(args, "command", None)
    if isinstance(command, list) and command[:1] == ["--"]:
        args.command = command[1:]
    if args.log_level != "warning":
        from toolkit import proc

        proc.set_log_level(args.log_level)
    try:
        return _handler(args.verb)(args)
    except PodunitError as error:
        print(f"podunit: {error}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_PODUNIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
