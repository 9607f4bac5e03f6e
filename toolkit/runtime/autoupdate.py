"""`podunit auto-update [--dry-run] [--rollback|--no-rollback]` (spec §4, podunit.yaml(5)
`auto_update`; docs/podunit-exec-logs-images.md "Auto-update").

For every defined container that opts in (`auto_update:`, or the label
`io.containers.autoupdate`) and whose unit is active:

- `registry`: the registry's manifest digest of the reference is compared with the
  one recorded at the last pull (`refs/NAME.json`); `local`: a `build:` container's
  build digest with the recorded one (toolkit.runtime.builds), a local archive's or
  layout's manifest digest with the stored one.
- When it changed (and not `--dry-run`): the stored image is kept as `NAME.previous`,
  the new one is pulled (or built) under the same ref name, and every active unit
  of that image is restarted (`systemctl restart`, which for `Type=notify` waits for
  READY). The update holds when each unit is still active GRACE seconds later and,
  for a container with a health check, the check passes once (`podunit healthcheck
  run NAME`). Otherwise, with rollback (the default), the previous
  image is restored under the ref name and the units restarted again; the report
  says `rolled back` (or `rollback failed`). A held update drops the previous image.

A local archive is re-read at every start of its container, so an update of one
restarts the unit but cannot roll back (the archive itself changed): the report
says so. One JSON-ready report entry per container; the exit status is 1 if any
update failed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from toolkit import proc
from toolkit.definitions.model import AutoUpdate, Container, PullPolicy
from toolkit.errors import CommandFailed, PodunitError
from toolkit.storage import image_catalog
from toolkit.storage.images import (
    ImageStore,
    fetch_image,
    parse_image_reference,
    read_record,
    remote_manifest,
)

GRACE_SECONDS = float(os.environ.get("PODUNIT_AUTO_UPDATE_GRACE", "3"))

Systemctl = Callable[[Sequence[str]], str]


def systemctl_runner(*, user: bool) -> Systemctl:
    def run(args: Sequence[str]) -> str:
        argv = ["systemctl", *(["--user"] if user else []), *args]
        return proc.output(argv, timeout=600)

    return run


def _active(systemctl: Systemctl, unit: str) -> bool:
    try:
        return systemctl(["is-active", unit]).strip() == "active"
    except CommandFailed:
        return False


def _changed(container: Container, store: ImageStore) -> tuple[bool, str]:
    """Whether the container's image source moved on, and what was compared."""
    assert container.image is not None
    reference = parse_image_reference(container.image)
    stored = store.manifest_digest(reference.store_name)
    if container.build is not None:
        from toolkit.runtime.builds import build_digest, recorded_build_digest

        digest = build_digest(container.build)
        return digest != recorded_build_digest(store, container), f"build context {digest[:19]}"
    remote = remote_manifest(reference).digest
    if reference.is_local:
        return remote != stored, f"source {remote[:19]}"
    recorded = (read_record(store, reference.store_name) or {}).get("registry_digest")
    return remote != recorded, f"registry {remote[:19]}"


def _fetch_new(container: Container, state_dir: str) -> None:
    assert container.image is not None
    if container.build is not None:
        from toolkit.runtime.builds import ensure_built

        ensure_built(container, state_dir, force=True)
    else:
        fetch_image(container.image, state_dir, policy=PullPolicy.ALWAYS)


def _healthy(container: Container, podunit: Sequence[str], unit: str) -> bool:
    """The container's health check passes once (`podunit healthcheck run NAME`: the check
    as its schedule runs it, recorded); True for a container without one."""
    check = container.healthcheck
    if check is None or not check.test:
        return True
    name = unit.removesuffix(".service")
    try:
        proc.run([*podunit, "healthcheck", "run", name],
                 timeout=check.timeout.total_seconds() + 30)  # fmt: skip
    except (CommandFailed, PodunitError, OSError):
        return False
    except Exception:  # subprocess.TimeoutExpired: the check hung
        return False
    return True


def _restart_all(
    units: Sequence[str], systemctl: Systemctl, container: Container, podunit: Sequence[str],
    grace: float,
) -> str | None:  # fmt: skip
    """Restart the units; None when all are active after `grace` (and healthy), else why."""
    for unit in units:
        try:
            systemctl(["restart", unit])
        except CommandFailed as error:
            return f"{unit} did not start: {error}"
    time.sleep(grace)
    for unit in units:
        if not _active(systemctl, unit):
            return f"{unit} is not active {grace:g} s after its restart"
        if not _healthy(container, podunit, unit):
            return f"{unit}: the health check fails after the restart"
    return None


def auto_update(
    containers: Sequence[Container],
    *,
    state_dir: str,
    systemctl: Systemctl,
    podunit: Sequence[str],
    dry_run: bool = False,
    rollback: bool = True,
    grace: float = GRACE_SECONDS,
    users: Callable[[], dict[str, list[str]]] = dict,
) -> list[dict[str, Any]]:
    """Update every opted-in container whose unit is active (module docstring)."""
    store = ImageStore.under(state_dir)
    report: list[dict[str, Any]] = []
    for container in containers:
        if container.auto_update is None or container.image is None or container.template:
            continue
        unit = f"{container.unit_name}.service"
        entry: dict[str, Any] = {
            "Unit": unit, "Container": container.unit_name, "Image": container.image,
            "Policy": container.auto_update.value,
        }  # fmt: skip
        report.append(entry)
        if container.auto_update is AutoUpdate.REGISTRY and (
            container.build is not None or parse_image_reference(container.image).is_local
        ):
            entry.update(Updated="failed", Reason="auto_update 'registry' needs a registry image")
            continue
        if not _active(systemctl, unit):
            entry.update(Updated="false", Reason=f"{unit} is not active")
            continue
        try:
            changed, compared = _changed(container, store)
        except PodunitError as error:
            entry.update(Updated="failed", Reason=str(error))
            continue
        entry["Checked"] = compared
        if not changed:
            entry["Updated"] = "false"
            continue
        if dry_run:
            entry["Updated"] = "pending"
            continue
        entry.update(_apply(container, unit, store, state_dir, systemctl, podunit,
                            rollback=rollback, grace=grace, users=users))  # fmt: skip
    return report


def _apply(
    container: Container, unit: str, store: ImageStore, state_dir: str, systemctl: Systemctl,
    podunit: Sequence[str], *, rollback: bool, grace: float,
    users: Callable[[], dict[str, list[str]]],
) -> dict[str, Any]:  # fmt: skip
    assert container.image is not None
    reference = parse_image_reference(container.image)
    local_source = reference.is_local and container.build is None
    previous = None if local_source else image_catalog.keep_previous(store, reference.store_name)
    try:
        _fetch_new(container, state_dir)
    except PodunitError as error:
        if previous is not None:
            image_catalog.restore_previous(store, reference.store_name)
        return {"Updated": "failed", "Reason": f"cannot fetch the new image: {error}"}
    digest = store.manifest_digest(reference.store_name)
    result: dict[str, Any] = {"Digest": digest, "PreviousDigest": previous}
    if previous is not None and digest == previous:
        image_catalog.drop_previous(store, reference.store_name, users())
        return {**result, "Updated": "false", "Reason": "the new image is the stored one"}
    problem = _restart_all([unit], systemctl, container, podunit, grace)
    if problem is None:
        if previous is not None:
            image_catalog.drop_previous(store, reference.store_name, users())
        return {**result, "Updated": "true"}
    result["Reason"] = problem
    if previous is None or not rollback:
        if previous is not None:
            image_catalog.drop_previous(store, reference.store_name, users())
        why = "a local archive is re-read at every start" if local_source else "--no-rollback"
        return {**result, "Updated": "failed", "Rollback": f"none ({why})"}
    image_catalog.restore_previous(store, reference.store_name)
    again = _restart_all([unit], systemctl, container, podunit, grace)
    if again is None:
        return {**result, "Updated": "rolled back", "Rollback": f"back on {previous}"}
    return {**result, "Updated": "failed", "Rollback": f"rollback failed: {again}"}
