"""Files in the data dir: only their owner may read them (0600, directories 0700), and a replaced file is
either the old one or the new one after a crash (written aside, fsynced, renamed, the directory fsynced).

The data dir holds the Raft journal and snapshots (the CA's signing key among the replicated state), the
agent's registrations and the node's identity: nothing in it is for other users of the host.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | Path) -> None:
    """Create ``path`` (and missing parents) for its owner alone; an existing one is narrowed to 0700."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    os.chmod(path, DIR_MODE)


def narrow(root: str | Path) -> None:
    """Give everything under ``root`` that this user owns the modes above: a data dir written by an earlier
    release (some of its files were 0644) is private from the first start of this one."""
    uid = os.getuid()
    for here, _dirs, names in os.walk(root):
        for path, mode in [(here, DIR_MODE), *((os.path.join(here, n), FILE_MODE) for n in names)]:
            st = os.lstat(path)
            if st.st_uid == uid and not os.path.islink(path) and st.st_mode & 0o777 != mode:
                os.chmod(path, mode)


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def replace_file(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, durably and readable by its owner only."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):  # an existing one was narrowed at start (see narrow)
        private_dir(parent)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # a leftover .tmp from an older release keeps its mode otherwise
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(parent)
