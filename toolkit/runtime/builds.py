"""`build:` — images built by buildah into podunit's image store (podunit.yaml(5) `build`).

The container's build unit (`podunit-build-NAME.service`, toolkit.unitgen.images)
runs `podunit build --plan FILE NAME`; `podunit run NAME` from a shell builds too.

When to build: a *build digest* is computed from everything that decides the
result — every file of the context that buildah does not ignore (path, type, mode,
contents; symlinks by target), the Dockerfile (which may live outside the context),
the ignore file, the build args, the target and the labels. It is recorded in
`<images>/builds/NAME.json` with the image it made; a build runs only when the
digest differs from the recorded one, or the image is no longer in the store
(`podunit rmi`), or `force` is given.

Ignored files are buildah's (toolkit.definitions.ignorefile, containers-ignore(5)):
`<Dockerfile>.dockerignore` or `<Dockerfile>.containerignore` beside the Dockerfile,
else `.containerignore`, else `.dockerignore` in the context. A file it excludes is
not read, a directory it excludes is not entered unless an exception (`!`) may
re-include something below it; the Dockerfile and the ignore file count even when
excluded. Without an ignore file the digest is the one of every file, as before.

How: `buildah bud` with podunit's own buildah storage (`<images>/buildah`, driver
vfs: works on any file system, including overlayfs, at the price of full copies
per layer, which is why the built image is removed from it after the push), then
`buildah push` of the image id into the OCI layout under the image's ref name, and
the record that `podunit images` shows. buildah's output goes to podunit's
stdout/stderr: the build unit's journal, or the terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile

from toolkit import proc, safefile
from toolkit.definitions.ignorefile import IgnoreRules, candidates
from toolkit.definitions.imageref import ImageError
from toolkit.definitions.model import Build, Container
from toolkit.errors import CommandFailed, UnreadableFile
from toolkit.storage.images import ImageStore, parse_image_reference, write_record

STORAGE_DRIVER = "vfs"


def _found_dockerfile(build: Build) -> str | None:
    """The Dockerfile buildah uses: `--file`, else the context's Containerfile or
    Dockerfile (buildah's DiscoverContainerfile); None when there is none."""
    if build.dockerfile is not None:
        return build.dockerfile
    for name in ("Containerfile", "Dockerfile"):
        path = os.path.join(build.context, name)
        if os.path.exists(path):
            return path
    return None


def _ignore_rules(build: Build, dockerfile: str | None) -> tuple[str, bytes, IgnoreRules] | None:
    """The ignore file buildah reads for this build: its path, bytes and rules."""
    for path in candidates(build.context, dockerfile):
        try:
            os.stat(path)
        except FileNotFoundError:
            continue
        except OSError:
            pass  # exists, or cannot tell: safefile says why it cannot be read
        try:
            data = safefile.read_bytes(path)
        except UnreadableFile as error:
            raise ImageError(
                f"cannot read the ignore file {path}: {error.reason}",
                hint="buildah reads it to leave files out of the build context "
                "(containers-ignore(5)); make it a regular file or remove it",
            ) from None
        text = data.decode("utf-8", "surrogateescape")  # as os.walk decodes file names
        return path, data, IgnoreRules.parse(text, path)
    return None


def build_digest(build: Build) -> str:
    """`sha256:...` of the context, the Dockerfile, args, target and labels (module docstring)."""
    digest = hashlib.sha256()

    def add(*parts: str | bytes) -> None:
        for part in parts:
            data = part.encode(errors="surrogateescape") if isinstance(part, str) else part
            digest.update(len(data).to_bytes(8, "big") + data)

    if not os.path.isdir(build.context):
        raise ImageError(
            f"build context {build.context} is not a directory",
            hint="build: {context: DIR} names a directory, relative to the definition's",
        )
    dockerfile = _found_dockerfile(build)
    ignore = _ignore_rules(build, dockerfile)
    rules = None
    if ignore is not None:
        ignore_path, ignore_data, rules = ignore
        add("ignore file", os.path.relpath(ignore_path, build.context), ignore_data)
    for directory, subdirectories, files in os.walk(build.context):
        relative = os.path.relpath(directory, build.context)
        prefix = "" if relative == "." else relative + "/"
        directories, entered = set(subdirectories), []
        for name in sorted(files + subdirectories):
            is_directory = name in directories
            if rules is not None and rules.excluded(prefix + name):
                if is_directory and rules.may_reinclude_below(prefix + name):
                    entered.append(name)
                continue
            if is_directory:
                entered.append(name)
            path = os.path.join(directory, name)
            info = os.lstat(path)
            add(prefix + name, oct(info.st_mode))
            if stat.S_ISLNK(info.st_mode):
                add(os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    add(hashlib.file_digest(handle, "sha256").digest())
        subdirectories[:] = entered  # sorted: the walk's order is the digest's
    # the Dockerfile counts even when it lies outside the context or is ignored
    if dockerfile is not None and (build.dockerfile is not None or rules is not None):
        try:  # safefile: a FIFO or /dev/zero must not hang or exhaust this
            add("dockerfile", safefile.read_bytes(dockerfile))
        except UnreadableFile as error:
            raise ImageError(f"cannot read the Dockerfile {dockerfile}: {error.reason}") from None
    add(json.dumps([build.args, build.target, build.labels]))
    return "sha256:" + digest.hexdigest()


def _record_path(store: ImageStore, container: Container) -> str:
    return str(store.root / "builds" / f"{container.unit_name}.json")


def _recorded(store: ImageStore, container: Container) -> dict[str, str]:
    try:
        with open(_record_path(store, container), "rb") as handle:
            record: dict[str, str] = json.load(handle)
    except (OSError, ValueError):
        return {}
    return record


def recorded_build_digest(store: ImageStore, container: Container) -> str | None:
    """The build digest of the container's last build (None: never built)."""
    return _recorded(store, container).get("build_digest")


def _buildah(store: ImageStore, run_dir: str) -> list[str]:
    return [
        "buildah", "--root", str(store.root / "buildah"), "--runroot", run_dir,
        "--storage-driver", STORAGE_DRIVER,
    ]  # fmt: skip


def _bud_argv(build: Build) -> list[str]:
    argv = ["bud", "--layers=false"]
    if build.dockerfile is not None:
        argv += ["--file", build.dockerfile]
    if build.target is not None:
        argv += ["--target", build.target]
    for key, value in build.args:
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in build.labels:
        argv += ["--label", f"{key}={value}"]
    return argv


def _run_shown(argv: list[str]) -> None:
    """Run buildah with its output on podunit's stderr (the build unit's journal, or the
    terminal), never on stdout, which may be a report (`podunit auto-update --format json`)."""
    child = proc.spawn(argv, stdout=2)
    status = child.wait()
    if status != 0:
        raise CommandFailed(argv, status, "")


def ensure_built(container: Container, state_dir: str, *, force: bool = False) -> bool:
    """Build the container's image unless its build digest is recorded and the image is
    stored; True when it built. Raises ImageError naming the container on failure."""
    build = container.build
    if build is None or container.image is None:
        raise ImageError(f"container {container.unit_name!r} has no build")
    reference = parse_image_reference(container.image)
    store = ImageStore.under(state_dir)
    digest = build_digest(build)
    recorded = _recorded(store, container)
    stored = store.manifest_digest(reference.store_name)
    if not force and stored is not None and recorded.get("build_digest") == digest:
        return False
    store.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="podunit-build-") as scratch:
        buildah = _buildah(store, os.path.join(scratch, "run"))
        iidfile = os.path.join(scratch, "iid")
        try:
            _run_shown([*buildah, *_bud_argv(build), "--iidfile", iidfile, build.context])
            with open(iidfile) as handle:
                image_id = handle.read().strip()
            with store.locked():
                proc.run(
                    [*buildah, "push", "--quiet", image_id,
                     f"oci:{store.layout}:{reference.store_name}"],
                    timeout=1800,
                )  # fmt: skip
                manifest = store.manifest_digest(reference.store_name)
                write_record(store, reference, digest=manifest, registry_digest=None)
            proc.run([*buildah, "rmi", "--force", image_id], check=False)
        except CommandFailed as error:
            raise ImageError(
                f"cannot build image {container.image} for container {container.unit_name!r}: "
                f"buildah {error.argv[len(buildah)]} exited with status {error.returncode}"
                + (f": {error.stderr.strip().splitlines()[-1]}" if error.stderr.strip() else ""),
                hint="buildah's output is above (a unit's: journalctl -u "
                f"podunit-build-{container.name}.service)",
            ) from None
    os.makedirs(store.root / "builds", mode=0o700, exist_ok=True)
    record = {"build_digest": digest, "image": container.image, "manifest": manifest or ""}
    scratch_record = _record_path(store, container) + ".tmp"
    with open(scratch_record, "w") as handle:
        json.dump(record, handle)
    os.replace(scratch_record, _record_path(store, container))
    return True
