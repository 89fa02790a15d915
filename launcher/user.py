"""The user ComfyUI runs as (COMFYUI_USER), and what that user may reach.

ComfyUI runs custom nodes nobody here wrote. As a user of its own it cannot read the other
programs' environments (`/proc/<handler>/environ` holds the S3 and Comfy.org keys), the worker's
logs or its control socket, and it writes only to its own folders. The image's default is the
system user `comfyui`; unset (a checkout) it is whoever runs the stack, so nothing changes for a
developer; `root` gives up that separation for setups that need it (README, COMFYUI_USER).

The comfyui program starts as root and the launcher drops to this user just before it execs
ComfyUI, with ComfyUI's own environment: the worker's secrets never sit in a process of that
user, not even the launcher's (supervisord's `user=` would start the launcher as that user,
with supervisord's whole environment in its /proc/<pid>/environ).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from worker_common.settings import ConfigError


@dataclass(frozen=True)
class ComfyUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @property
    def is_current(self) -> bool:
        """The launcher already runs as this user: nothing to switch, nothing to hand over."""
        return self.uid == os.geteuid()

    def subprocess_ids(self) -> dict[str, object]:
        """subprocess.run() arguments that run a child as this user."""
        if self.is_current:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def comfyui_user(name: str) -> ComfyUser:
    """COMFYUI_USER (`name`), or the user running the stack when it is empty."""
    if not name:
        return _current_user()
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"COMFYUI_USER={name!r}: no such user in this container. The image creates 'comfyui'; "
            "create the user, or set COMFYUI_USER=root to run ComfyUI as root (see the README for what that costs)"
        ) from None
    if entry.pw_uid != os.geteuid() and os.geteuid() != 0:
        raise ConfigError(
            f"COMFYUI_USER={name!r} needs the stack to run as root (it runs as {_current_user().name}); "
            "leave COMFYUI_USER unset to run ComfyUI as the user that starts the stack"
        )
    return ComfyUser(name, entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(name, entry.pw_gid)))


def _current_user() -> ComfyUser:
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # an id without a passwd entry, as some container runtimes give
        name = str(uid)
    return ComfyUser(name, uid, gid, tuple(os.getgroups()))


def become(user: ComfyUser) -> None:
    """Drop to `user` for good (groups first: they cannot be changed once the uid is not root's)."""
    if user.is_current:
        return
    os.setgroups(list(user.groups))
    os.setgid(user.gid)
    os.setuid(user.uid)


@contextlib.contextmanager
def acting_as(user: ComfyUser) -> Iterator[None]:
    """Take `user`'s effective ids for a permission check, and root's back after it."""
    if user.is_current:
        yield
        return
    saved_groups = os.getgroups()
    os.setgroups(list(user.groups))
    os.setegid(user.gid)
    os.seteuid(user.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(saved_groups)


def can(user: ComfyUser, path: Path, mode: int) -> bool:
    """Whether `user` may access `path` with `mode` (os.R_OK, os.W_OK, os.X_OK), ACLs and all."""
    with acting_as(user):
        return os.access(path, mode, effective_ids=True)


def why_not(user: ComfyUser, path: Path) -> str:
    """Why `user` cannot reach `path`: the first folder above it that it may not enter, if one is."""
    with acting_as(user):
        closed = next((p for p in reversed(path.parents) if not os.access(p, os.X_OK, effective_ids=True)), None)
    if closed is None:
        return ""
    info = closed.stat()
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    return f": {closed} is closed to it (mode {stat.S_IMODE(info.st_mode):04o}, owner {owner})"


def hand_over(user: ComfyUser, folders: list[Path]) -> None:
    """Make `folders` (and everything in them) `user`'s alone: owned by it, mode 0700."""
    if user.is_current:
        return
    for folder in folders:
        for parent, dirs, files in os.walk(folder):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(parent, name), user.uid, user.gid)
        os.chown(folder, user.uid, user.gid)
        folder.chmod(0o700)
