"""Root file systems for test containers, built inside the sandbox.

- `busybox_rootfs(sandbox, path)`: busybox-static with every applet as a symlink,
  /etc/passwd and /etc/group (root, `app` 1000:1000, nobody), the usual empty
  mount points. Small and fast (about 0.1 s).
- `hosttools_rootfs(sandbox, path)`: the host's /usr (hence python3, coreutils,
  ...) bind-mounted read-only, with Debian's merged-/usr symlinks (/bin, /sbin,
  /lib, /lib64 -> usr/...). Returns the volume strings (`/usr:/usr:ro`) a
  definition or `podunit run -v` needs.

Both are idempotent (a finished tree is left as it is).
"""

from __future__ import annotations

from typing import Protocol

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n" + (
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n"
HOSTTOOLS_VOLUMES = ("/usr:/usr:ro",)


class Runs(Protocol):
    """What these helpers need of `tests.support.sandbox.Sandbox`."""

    def sh(self, script: str, **kwargs: object) -> object: ...


def _skeleton_script(path: str) -> str:
    return f"""
set -e
root={path}
mkdir -p "$root"/proc "$root"/sys "$root"/dev "$root"/tmp "$root"/run "$root"/var/tmp \\
    "$root"/etc "$root"/root "$root"/home/app "$root"/mnt
chmod 1777 "$root"/tmp "$root"/var/tmp
printf '%s' '{PASSWD}' > "$root"/etc/passwd
printf '%s' '{GROUP}' > "$root"/etc/group
chown 1000:1000 "$root"/home/app
"""


def busybox_rootfs(sandbox: Runs, path: str) -> str:
    """A busybox root file system at `path` inside the sandbox; returns `path`."""
    sandbox.sh(
        f"""
test -e {path}/.podunit-rootfs-done && exit 0
{_skeleton_script(path)}
mkdir -p "$root"/bin "$root"/sbin "$root"/usr/bin "$root"/usr/sbin
cp /bin/busybox "$root"/bin/busybox
for applet in $(/bin/busybox --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
touch "$root"/.podunit-rootfs-done
"""
    )
    return path


def hosttools_rootfs(sandbox: Runs, path: str) -> tuple[str, ...]:
    """A root file system at `path` that gets the host's /usr; returns its volumes."""
    sandbox.sh(
        f"""
test -e {path}/.podunit-rootfs-done && exit 0
{_skeleton_script(path)}
mkdir -p "$root"/usr
for link in bin sbin lib lib64; do
    [ -e "$root/$link" ] || ln -s usr/$link "$root/$link"
done
touch "$root"/.podunit-rootfs-done
"""
    )
    return HOSTTOOLS_VOLUMES
