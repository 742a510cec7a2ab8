"""Turns an IPFS API address into the HTTP base URL of its RPC API.

Operators copy ``/ip4/127.0.0.1/tcp/5001`` straight from Kubo's config, so that form must work; an
http(s) URL works too. The ``multiformats`` package's multiaddr module has no ``dns*`` protocols, which
remote nodes need, so the text form is read here (no binary encoding is involved).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def api_url_from_multiaddr(text: str) -> str:
    """Returns ``http(s)://host:port`` for a multiaddr or URL; raises ``ValueError`` saying what is wrong."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if not parts.hostname:
            raise ValueError(f"{text!r} has no host")
        return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is neither a multiaddr (/ip4/127.0.0.1/tcp/5001) nor an http(s) URL")

    tokens = text.strip("/").split("/")
    host: str | None = None
    port: int | None = None
    scheme = "http"
    index = 0
    while index < len(tokens):
        proto = tokens[index]
        if proto in {"http", "https"}:
            scheme = proto
            index += 1
            continue
        if index + 1 >= len(tokens):
            raise ValueError(f"{text!r}: /{proto} needs a value")
        value = tokens[index + 1]
        if proto == "ip4":
            host = str(ipaddress.IPv4Address(value))
        elif proto == "ip6":
            host = f"[{ipaddress.IPv6Address(value)}]"
        elif proto in {"dns", "dns4", "dns6", "dnsaddr"}:
            if not value or any(c in value for c in " :@"):
                raise ValueError(f"{text!r}: {value!r} is not a host name")
            host = value
        elif proto == "tcp":
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise ValueError(f"{text!r}: {value!r} is not a TCP port")
            port = int(value)
        else:
            raise ValueError(f"{text!r}: /{proto} is not supported for the IPFS API (use ip4/ip6/dns + tcp)")
        index += 2
    if host is None or port is None:
        raise ValueError(f"{text!r} needs a host (/ip4, /ip6 or /dns) and a /tcp port")
    return f"{scheme}://{host}:{port}"
