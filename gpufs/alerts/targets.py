"""HTTP POSTs to the URLs users give (webhooks, Alertmanagers): http or https only, to public
addresses only unless ALERT_ALLOW_PRIVATE_TARGETS, no redirects, a short timeout, a few KB read."""
import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 5  # per connect, send and read: a target that hangs must not hold the sender
READ_LIMIT = 4096  # of the answer's body: only its status matters
_TLS = ssl.create_default_context()


class Refused(Exception):
    """A URL the server will not call; the message says why, for a 400 or the outbox's log."""


class Target:
    """A URL checked down to its addresses: what is connected to is what was checked."""

    def __init__(self, url, allow_private):
        if not isinstance(url, str) or not url.isprintable() or " " in url:
            raise Refused("must be an http or https URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Refused("must be an http or https URL")
        if parts.username is not None or parts.password is not None:
            raise Refused("must not hold a user name or password")
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as err:
            raise Refused("has an invalid port") from err
        self.scheme, self.host = parts.scheme, parts.hostname
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.addresses = resolve(self.host, self.port, allow_private)


def resolve(host, port, allow_private):
    """Every address `host` resolves to, refused when any is loopback, private, link-local or
    otherwise not public (a host answering with one public and one private address is refused)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise Refused("host does not resolve") from err
    if not allow_private:
        for _family, _type, _proto, _name, sockaddr in found:
            ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
            ip = getattr(ip, "ipv4_mapped", None) or ip
            if not ip.is_global or ip.is_multicast:
                raise Refused("resolves to a loopback, private or link-local address "
                              "(allowed only with ALERT_ALLOW_PRIVATE_TARGETS=true)")
    return found


def check(url, allow_private):
    """Raise Refused unless `url` is one the server would call now."""
    Target(url, allow_private)


def post(url, body, headers, allow_private):
    """POST `body` (JSON bytes) and return the answer's status. Raises Refused for an unsafe
    target, OSError or http.client.HTTPException when there is no answer. The name is resolved
    and checked again here, and the connection goes to the checked addresses only, so a name
    that changed its answers since the URL was saved cannot lead into a private network."""
    target = Target(url, allow_private)
    conn = (_HTTPS if target.scheme == "https" else _HTTP)(target)
    try:
        conn.request("POST", target.path, body=body, headers={
            "Content-Type": "application/json", "User-Agent": "gpufs-alerts", "Connection": "close", **headers})
        answer = conn.getresponse()  # http.client never follows a redirect: a 3xx is an answer
        answer.read(READ_LIMIT)
        return answer.status
    finally:
        conn.close()


def _connect(target):
    last = OSError("no address")
    for family, kind, proto, _name, sockaddr in target.addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(TIMEOUT_SECONDS)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            sock.close()
            last = err
    raise last


class _HTTP(http.client.HTTPConnection):
    def __init__(self, target):
        super().__init__(target.host, target.port, timeout=TIMEOUT_SECONDS)
        self.target = target

    def connect(self):
        self.sock = _connect(self.target)


class _HTTPS(http.client.HTTPSConnection):
    def __init__(self, target):
        super().__init__(target.host, target.port, timeout=TIMEOUT_SECONDS, context=_TLS)
        self.target = target

    def connect(self):
        self.sock = _TLS.wrap_socket(_connect(self.target), server_hostname=self.target.host)
