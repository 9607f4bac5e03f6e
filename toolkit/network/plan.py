"""What a container joins, decided from its definition when it is prepared (podunit.yaml(5)
NETWORKS): pure, and light, because every start decides it, with no network as well
(`toolkit.network.attach` does the work, and imports netavark and the network store).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from toolkit.errors import PodunitError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from toolkit.definitions.model import Container

DEFAULT_NETWORK = "podunit"  # the default bridge network (also toolkit.network.config's)
DEFAULT_ENV = "PODUNIT_DEFAULT_NETWORK"


def network_plan(
    container: Container, *, user: bool, environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """What the container joins: {"mode": "bridge"|"none"|"host", "attachments": [...],
    "specs": [...], plus its /etc files' settings}; only JSON values."""
    explicit = container.network is not None or bool(container.networks)
    mode = container.network or (None if container.networks else environ.get(DEFAULT_ENV))
    mode = mode or "bridge"
    attachments: list[dict[str, Any]] = []
    if container.networks:
        for attachment in container.networks:
            name = DEFAULT_NETWORK if attachment.name == "bridge" else attachment.name
            attachments.append(
                {"network": name, "aliases": list(attachment.aliases),
                 "address": attachment.ipv4_address}
            )  # fmt: skip
        mode = "bridge"
    elif mode not in ("none", "host"):
        name = DEFAULT_NETWORK if mode == "bridge" else mode
        attachments.append({"network": name, "aliases": [], "address": None})
        mode = "bridge"
    if attachments and user:
        if explicit:
            raise PodunitError(
                f"container {container.name}: bridge networks need root",
                hint="use network: none (own namespace, loopback only) or network: host",
            )
        attachments, mode = [], "none"  # rootless: the default is a private namespace
    plan: dict[str, Any] = {"mode": mode, "attachments": attachments}
    if attachments:
        plan["specs"] = [spec._asdict() for spec in container.network_specs]
    if container.extra_hosts:
        plan["extra_hosts"] = [list(pair) for pair in container.extra_hosts]
    if container.dns:
        plan["dns"] = list(container.dns)
    if container.dns_search:
        plan["dns_search"] = list(container.dns_search)
    return plan


def has_work(plan: Mapping[str, Any]) -> bool:
    """Whether `connect` does anything for this plan (none/host without /etc keys: no)."""
    return bool(plan["attachments"] or plan.get("extra_hosts") or plan.get("dns")
                or plan.get("dns_search"))  # fmt: skip
