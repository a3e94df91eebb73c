"""Turn a media URI into something the decoder can open, under a strict policy.

Upload events carry URIs chosen by whoever produced the event, so every URI is
treated as untrusted input:

* ``file://`` URIs are honoured only when the *real* path (symlinks resolved,
  ``..`` collapsed) lies inside one of the configured roots. Bare paths are
  refused so that a string never silently changes meaning between "path" and
  "URI".
* ``http://`` and ``https://`` URIs are honoured only for allow-listed hosts,
  and redirects are followed only when they stay on the same host.
* Every other scheme is refused.

Size limits are enforced before bytes are read (file size, ``Content-Length``)
and again while an HTTP body streams in, so a lying server cannot make us
buffer more than ``max_bytes``.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import httpx

from encoders.exceptions import MediaFetchError, MediaPolicyError, MediaTooLarge

if TYPE_CHECKING:  # only for the type of from_settings(); keeps import cheap
    from streams.settings import EncoderSettings

log = logging.getLogger(__name__)

_HTTP_SCHEMES = ("http", "https")
_REDIRECT_CODES = (301, 302, 303, 307, 308)
# Enough for http->https and a CDN hop; more than this is a loop or a trick.
_MAX_REDIRECTS = 5


@dataclass(frozen=True)
class MediaSource:
    """Fetched media: exactly one of ``path`` (local, policy-checked) or ``data`` (downloaded)."""

    uri: str
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("MediaSource needs exactly one of path or data")

    @property
    def size(self) -> int:
        """Size in bytes (a stat for local files)."""
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        return self.path.stat().st_size


@dataclass(frozen=True)
class _AllowedHost:
    host: str
    port: int | None  # None: any port on that host


class MediaResolver:
    """Checks media URIs against the policy and fetches them.

    Thread-safe: it holds only immutable configuration; each HTTP fetch uses its
    own short-lived client.
    """

    def __init__(
        self,
        roots: list[Path],
        hosts: list[str],
        max_bytes: int,
        timeout_s: float,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        # Roots are resolved once, so a root that is itself a symlink still
        # compares equal to the real paths of the files below it.
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.hosts = [_parse_allowed_host(h) for h in hosts if h.strip()]
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: EncoderSettings) -> MediaResolver:
        return cls(
            roots=list(settings.media_roots),
            hosts=list(settings.media_hosts),
            max_bytes=settings.media_max_bytes,
            timeout_s=settings.media_timeout_s,
        )

    # -- policy -------------------------------------------------------------

    def check(self, uri: str | None) -> None:
        """Raise :class:`MediaPolicyError` if ``uri`` may not be fetched; fetch nothing.

        Useful to reject an upload event before it is queued.
        """
        parts = _split(uri)
        if parts.scheme == "file":
            self._local_path(uri or "", parts)
        else:
            self._check_http(uri or "", parts)

    def _local_path(self, uri: str, parts: SplitResult) -> Path:
        """The real path a ``file://`` URI names, if it lies inside a root."""
        # file://host/... names a file on another machine; only the local one is meaningful.
        if parts.netloc not in ("", "localhost"):
            raise MediaPolicyError(uri, f"file URI with a remote host {parts.netloc!r} is not allowed")
        raw = unquote(parts.path)
        if "\x00" in raw:
            raise MediaPolicyError(uri, "path contains a NUL byte")
        if not raw.startswith("/"):
            raise MediaPolicyError(uri, "file URI path must be absolute")
        if not self.roots:
            raise MediaPolicyError(uri, "no media roots are configured, file URIs are disabled")
        # realpath collapses '..' and follows every symlink, so neither
        # /root/../../etc/passwd nor /root/link-to-etc can escape.
        real = Path(os.path.realpath(raw))
        if not any(real.is_relative_to(root) for root in self.roots):
            raise MediaPolicyError(uri, f"path resolves to {real}, outside the allowed media roots")
        return real

    def _check_http(self, uri: str, parts: SplitResult) -> None:
        if parts.scheme not in _HTTP_SCHEMES:
            raise MediaPolicyError(uri, f"scheme {parts.scheme!r} is not allowed (use file, http or https)")
        # Credentials in a URI would be sent to the host and logged with the URI.
        if parts.username is not None or parts.password is not None:
            raise MediaPolicyError(uri, "credentials in the URI are not allowed")
        host = (parts.hostname or "").lower()
        if not host:
            raise MediaPolicyError(uri, "URI has no host")
        try:
            # The default port is explicit so that an entry "host:443" also
            # admits https://host/ (no port in the URI).
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise MediaPolicyError(uri, f"invalid port: {exc}") from None
        if not any(a.host == host and (a.port is None or a.port == port) for a in self.hosts):
            raise MediaPolicyError(uri, f"host {host!r} is not in the allowed media hosts")

    # -- fetching -----------------------------------------------------------

    def fetch(self, uri: str | None) -> MediaSource:
        """Check ``uri`` against the policy and return the media it names.

        Raises :class:`MediaPolicyError`, :class:`MediaFetchError` or
        :class:`MediaTooLarge`.
        """
        parts = _split(uri)
        assert uri is not None  # _split rejects None
        if parts.scheme == "file":
            return self._fetch_file(uri, parts)
        self._check_http(uri, parts)
        return MediaSource(uri=uri, data=self._download(uri))

    def _fetch_file(self, uri: str, parts: SplitResult) -> MediaSource:
        path = self._local_path(uri, parts)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise MediaFetchError(uri, "file not found") from None
        except OSError as exc:
            raise MediaFetchError(uri, f"cannot stat file: {exc.strerror or exc}") from None
        # Directories, FIFOs and devices (/dev/zero under a root) are not media.
        if not stat.S_ISREG(st.st_mode):
            raise MediaFetchError(uri, "not a regular file")
        if st.st_size > self.max_bytes:
            raise MediaTooLarge(uri, f"file is {st.st_size} bytes, limit is {self.max_bytes}")
        if not os.access(path, os.R_OK):
            raise MediaFetchError(uri, "file is not readable")
        # The decoder opens the real path, not the URI's, so a symlink swapped
        # in after this check cannot redirect it (the checked target is kept).
        return MediaSource(uri=uri, path=path)

    def _download(self, uri: str) -> bytes:
        """GET ``uri`` within the size and time limits, following same-host redirects only."""
        deadline = time.monotonic() + self.timeout_s
        url = uri
        origin_host = (urlsplit(uri).hostname or "").lower()
        # identity: the size limit must apply to what the server sends, and a
        # compressed body could expand far beyond it.
        headers = {"Accept-Encoding": "identity"}
        try:
            with httpx.Client(
                timeout=httpx.Timeout(self.timeout_s), follow_redirects=False, headers=headers
            ) as client:
                for _ in range(_MAX_REDIRECTS + 1):
                    with client.stream("GET", url) as resp:
                        if resp.status_code in _REDIRECT_CODES:
                            url = self._redirect_target(uri, url, resp, origin_host)
                            continue
                        if resp.status_code != 200:
                            raise MediaFetchError(uri, f"HTTP {resp.status_code} from {url}")
                        return self._read_body(uri, resp, deadline)
        except httpx.TimeoutException:
            raise MediaFetchError(uri, f"timed out after {self.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise MediaFetchError(uri, f"download failed: {type(exc).__name__}: {exc}") from None
        raise MediaFetchError(uri, f"more than {_MAX_REDIRECTS} redirects")

    def _redirect_target(self, uri: str, current: str, resp: httpx.Response, origin_host: str) -> str:
        location = resp.headers.get("location")
        if not location:
            raise MediaFetchError(uri, f"HTTP {resp.status_code} without a Location header")
        target = urljoin(current, location)
        parts = urlsplit(target)
        # A redirect to another host would let an allowed host bounce us anywhere.
        if (parts.hostname or "").lower() != origin_host:
            raise MediaPolicyError(uri, f"redirect to another host refused: {target}")
        self._check_http(uri, parts)
        log.debug("media redirect %s -> %s", current, target)
        return target

    def _read_body(self, uri: str, resp: httpx.Response, deadline: float) -> bytes:
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise MediaTooLarge(uri, f"Content-Length is {declared} bytes, limit is {self.max_bytes}")
        body = bytearray()
        # iter_bytes undoes a Content-Encoding the server applied despite
        # "identity"; the limit then counts decoded bytes, which is what we keep.
        # No chunk_size: httpx would hold data back until a full chunk arrived,
        # and the deadline below must be checked as bytes trickle in.
        for chunk in resp.iter_bytes():
            body += chunk
            # Checked per chunk: Content-Length may be absent or wrong.
            if len(body) > self.max_bytes:
                raise MediaTooLarge(uri, f"body exceeds the limit of {self.max_bytes} bytes")
            # httpx's timeout is per read; a server trickling bytes would never
            # trip it, so the whole download has its own deadline.
            if time.monotonic() > deadline:
                raise MediaFetchError(uri, f"download exceeded {self.timeout_s:g}s")
        log.debug("media downloaded %s (%d bytes)", uri, len(body))
        return bytes(body)


def _split(uri: str | None) -> SplitResult:
    """Parse ``uri`` and reject the forms no scheme handler should see."""
    if uri is None:
        raise MediaPolicyError("", "empty media URI")
    if not isinstance(uri, str):
        raise MediaPolicyError(str(uri), "media URI must be a string")
    if not uri.strip():
        raise MediaPolicyError(uri, "empty media URI")
    parts = urlsplit(uri.strip())
    if not parts.scheme:
        if uri.strip().startswith("/"):
            raise MediaPolicyError(uri, f"bare paths are not accepted; use file://{uri}")
        raise MediaPolicyError(uri, "URI has no scheme; use file:///absolute/path or http(s)://")
    # urlsplit lower-cases the scheme, so FILE:// and HTTP:// work as expected.
    return parts


def _parse_allowed_host(entry: str) -> _AllowedHost:
    """``example.com`` allows any port; ``example.com:8080`` only that one."""
    parts = urlsplit("//" + entry.strip())
    if not parts.hostname:
        raise ValueError(f"invalid media host entry: {entry!r}")
    return _AllowedHost(host=parts.hostname.lower(), port=parts.port)
