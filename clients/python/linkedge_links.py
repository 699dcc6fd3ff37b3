"""Mint linkedge tracked links: clicks, open pixels and traps (README, "Link format").

Standard library only (hmac, hashlib, base64). The same bytes as linkedge's own minting: checked
against tests/vectors/tokens.json by test_linkedge_links.py.

    from linkedge_links import Minter
    m = Minter(key_id=1, secret=open("/etc/linkedge/link-key-1", "rb").read().rstrip(b"\r\n"))
    url = m.click("link.example.com", "https://example.com/", workspace=7, message=9, link=1)
"""
import base64
import hashlib
import hmac
import time

VERSION = 1
MAX_URL_LEN = 2048
MIN_SECRET_LEN = 32
_KINDS = {"click": 1, "open": 2, "trap": 3}
_U64 = (1 << 64) - 1
_HOST_CHARS = set(b"abcdefghijklmnopqrstuvwxyz0123456789-._")


def _varint(out, n):
    if not 0 <= n <= _U64:
        raise ValueError(f"{n} is not between 0 and 2^64-1")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def valid_destination(url):
    """True when linkedge redirects to `url`: an absolute http(s) URL with a host, at most 2048
    bytes, without spaces or control characters."""
    try:
        b = url.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not a URL linkedge can carry
        return False
    if len(b) > MAX_URL_LEN or any(c <= 0x20 or c == 0x7F for c in b):
        return False
    lower = b[:8].lower()
    if lower.startswith(b"https://"):
        rest = b[8:]
    elif lower.startswith(b"http://"):
        rest = b[7:]
    else:
        return False
    end = min([i for i in (rest.find(b"/"), rest.find(b"?"), rest.find(b"#")) if i >= 0], default=len(rest))
    authority = rest[:end]
    host = authority.rsplit(b"@", 1)[-1]
    return bool(host) and not host.startswith(b":") and b"\\" not in authority


def _check_host(host):
    b = host.encode("utf-8", "replace")
    if not b or len(b) > 253:
        pass
    elif b.startswith(b"[") and b.endswith(b"]") and b":" in b:
        inner = b[1:-1]
        if all(c in b"0123456789abcdef:." for c in inner):
            return
    elif (
        all(c in _HOST_CHARS for c in b)
        and not b.startswith(b".")
        and not b.endswith(b".")
        and b".." not in b
    ):
        return
    raise ValueError(f"host {host!r} must be a normalised host name: lowercase, no port, no trailing dot")


class Minter:
    """Mints with one key of linkedge's keyring (`links.keys` in its config: the same id and
    secret bytes)."""

    def __init__(self, key_id, secret, scheme="https"):
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if len(secret) < MIN_SECRET_LEN:
            raise ValueError(f"secret is {len(secret)} bytes; at least {MIN_SECRET_LEN} are required")
        if not 0 <= key_id <= 0xFFFFFFFF:
            raise ValueError("key_id must be between 0 and 2^32-1")
        self.key_id = key_id
        self.scheme = scheme
        self._key = hmac.new(secret, digestmod=hashlib.sha256)

    def token(self, host, kind, workspace, message, link=0, issued=None, url=""):
        """The token alone; `kind` is "click", "open" or "trap"."""
        _check_host(host)
        if kind not in _KINDS:
            raise ValueError(f"kind must be click, open or trap, not {kind!r}")
        if kind == "open":
            if url:
                raise ValueError("an open pixel carries no destination")
        elif not valid_destination(url):
            raise ValueError(
                "url must be an absolute http:// or https:// URL with a host, without spaces or "
                f"control characters, at most {MAX_URL_LEN} bytes"
            )
        if issued is None:
            issued = int(time.time())
        u = url.encode("utf-8")
        buf = bytearray([VERSION, _KINDS[kind]])
        for n in (self.key_id, workspace, message, link, issued, len(u)):
            _varint(buf, n)
        buf += u
        check = self._key.copy()
        check.update(b"\x01" + bytes(buf))
        buf += check.digest()[:4]
        mac = self._key.copy()
        mac.update(b"\x02" + host.encode("ascii") + b"\x00" + bytes(buf))
        buf += mac.digest()[:16]
        return base64.urlsafe_b64encode(bytes(buf)).rstrip(b"=").decode("ascii")

    def _url(self, host, path, token):
        return f"{self.scheme}://{host}/{path}/{token}"

    def click(self, host, url, workspace, message, link=0, issued=None):
        """A tracked click link to `url`."""
        return self._url(host, "c", self.token(host, "click", workspace, message, link, issued, url))

    def trap(self, host, url, workspace, message, link=0, issued=None):
        """A trap: a click link to hide in the email, followed by scanners, never by a person."""
        return self._url(host, "c", self.token(host, "trap", workspace, message, link, issued, url))

    def open(self, host, workspace, message, link=0, issued=None):
        """An open-pixel URL (no destination)."""
        return self._url(host, "o", self.token(host, "open", workspace, message, link, issued))
