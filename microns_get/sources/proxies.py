"""HTTP proxies from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, any case), as
curl, the aws cli, s5cmd and rclone honour them: compute nodes of a cluster often reach the
internet only through one.

Owns: which proxy, if any, a host is reached through (the standard library's reading of those
variables), and opening an `http.client` connection through it: a CONNECT tunnel for https, and
for plain http requests whose target is the absolute URL (`forward_target`).
Must not read or send anything else: the caller does the exchange.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

FORWARD_ATTR = "microns_get_forward"  # set on a plain-http connection to a forward proxy


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization value, from user:password@ in its URL


def proxy_for(scheme: str, netloc: str) -> Proxy | None:
    """The proxy the environment names for `scheme://netloc`, or None (none set, or NO_PROXY)."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # the usual case, decided without importing urllib.request (~4 ms a run)
    import urllib.request

    host = urlsplit(f"//{netloc}").hostname or netloc
    if urllib.request.proxy_bypass(host):
        return None
    url = urllib.request.getproxies().get(scheme)
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    authorization = None
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(token.encode()).decode("ascii")
    return Proxy(parts.hostname, parts.port or 8080, authorization)


def connect_via(
    proxy: Proxy, scheme: str, netloc: str, timeout: float, tls: ssl.SSLContext | None
) -> http.client.HTTPConnection:
    """A connection to `scheme://netloc` through `proxy`."""
    auth = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else {}
    if scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            proxy.host, proxy.port, timeout=timeout, context=tls
        )
        target = urlsplit(f"//{netloc}")
        conn.set_tunnel(target.hostname or netloc, target.port or 443, headers=auth)
        return conn
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout)
    setattr(conn, FORWARD_ATTR, (f"http://{netloc}", auth))
    return conn


def forward_target(conn: http.client.HTTPConnection, target: str) -> tuple[str, dict[str, str]]:
    """The request target and extra headers for `conn`: an absolute URL (and the proxy's
    credentials) when it goes to a forward proxy, else `target` as it is."""
    forward = getattr(conn, FORWARD_ATTR, None)
    if forward is None:
        return target, {}
    prefix, auth = forward
    return prefix + target, auth
