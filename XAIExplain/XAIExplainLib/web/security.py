"""What a served page may reach: a token for non-loopback hosts, named paths only, bounded uploads.

``xaiexplain serve`` runs a model server that a browser controls, so the page is treated as
untrusted input: it names files only by choosing among the images, models and folders given
on the command line (or found under ``--models-dir`` / ``--output-dir``), it never browses
the server's file system, and an upload larger than :data:`UPLOAD_LIMIT_BYTES` is refused.
Bound to anything but loopback, every HTTP request and the websocket must carry the access
token (the URL's ``?token=``, then a same-site cookie), compared in constant time.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

TOKEN_PARAMETER = "token"
TOKEN_COOKIE = "xaiexplain_token"
#: the largest upload the page accepts (a CT series is rarely above this)
UPLOAD_LIMIT_BYTES = 1024 * 1024 * 1024


class AccessError(PermissionError):
    """A path or a request the page is not allowed to reach."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_matches(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), token.encode())


def check_upload_size(size: int, limit: int = UPLOAD_LIMIT_BYTES) -> None:
    if size > limit:
        raise AccessError(f"the upload is {size / 2 ** 20:.0f} MB, more than the {limit / 2 ** 20:.0f} MB this "
                          "server accepts; put the file on the server and name it on the command line")


class AllowedPaths:
    """The files and folders the page may open: those named at start, and what lies under the roots."""

    def __init__(self, files=(), roots=()):
        self._files = {self._real(p) for p in files}
        self._roots = [self._real(p) for p in roots]

    @staticmethod
    def _real(path) -> Path:
        return Path(os.path.realpath(os.path.expanduser(str(path))))

    def add_file(self, path) -> None:
        self._files.add(self._real(path))

    def add_root(self, path) -> None:
        self._roots.append(self._real(path))

    def allows(self, path) -> bool:
        real = self._real(path)
        return real in self._files or any(real == root or root in real.parents for root in self._roots)

    def check(self, path) -> Path:
        """The resolved path, or AccessError naming what the page may open instead."""
        if not str(path).strip():
            raise AccessError("no path given")
        real = self._real(path)
        if not self.allows(real):
            raise AccessError(f"'{path}' is not one of the images, models or folders named when the server "
                              "started (or under --models-dir / --output-dir); restart the server naming it")
        return real
