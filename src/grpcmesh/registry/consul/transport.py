"""HTTP to the Consul agent: one aiohttp session, JSON in and out, failures as registry errors."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from grpcmesh._extras import require
from grpcmesh.errors import ConfigError, RegistryError, RegistryUnavailableError
from grpcmesh.registry.consul.options import ConsulOptions

__all__ = ["REQUEST_TIMEOUT", "ConsulHttp", "Reply", "refusal"]

REQUEST_TIMEOUT = 10.0
_SHOWN_BODY = 300


@dataclass(frozen=True)
class Reply:
    status: int
    data: Any
    headers: Mapping[str, str]
    text: str


class ConsulHttp:
    """Requests to one agent, with the token header, TLS and the namespace/datacenter parameters."""

    def __init__(self, options: ConsulOptions, check_open: Callable[[], None]) -> None:
        self.options = options
        self._aiohttp = require("aiohttp", "consul", "the Consul registry")
        self._ssl = ssl_context(options)
        self._check_open = check_open
        self._session: Any = None

    def params(self, *, read: bool, **extra: str) -> dict[str, str]:
        params = dict(extra)
        if self.options.namespace:
            params["ns"] = self.options.namespace
        if read and self.options.datacenter:
            params["dc"] = self.options.datacenter
        return params

    def _http(self) -> Any:
        if self._session is None:
            headers = {"X-Consul-Token": self.options.token} if self.options.token else {}
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
                headers=headers,
            )
        return self._session

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str],
        body: Any = None,
        timeout: float = REQUEST_TIMEOUT,
        allow: frozenset[int] = frozenset(),
    ) -> Reply:
        """One request, its JSON body decoded (``None`` when empty).

        Raises :class:`RegistryUnavailableError` when the agent cannot be reached or fails
        (5xx), :class:`RegistryError` when it refuses (4xx); statuses in ``allow`` are returned.
        """
        self._check_open()
        aiohttp = self._aiohttp
        url = self.options.base_url + path
        try:
            async with self._http().request(
                method, url, params=params, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    if response.status in allow:
                        return Reply(response.status, None, response.headers, text)
                    raise refusal(method, path, response.status, text)
                data = _json(text, method, path) if text.strip() else None
                return Reply(response.status, data, response.headers, text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryUnavailableError(
                f"consul agent {self.options.base_url} unreachable ({method} {path}): {exc or type(exc).__name__}"
            ) from exc

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _json(text: str, method: str, path: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise RegistryError(
            f"consul answered {method} {path} with something that is not usable JSON: {text[:200]!r}"
        ) from None


def refusal(method: str, path: str, status: int, text: str) -> RegistryError:
    detail = text.strip()[:_SHOWN_BODY] or "(empty body)"
    if status in (401, 403):
        return RegistryError(
            f"consul refused {method} {path} ({status}: {detail}); give a token with the needed ACL "
            "(registry option token=... or CONSUL_HTTP_TOKEN)"
        )
    if status >= 500:
        return RegistryUnavailableError(f"consul failed {method} {path} ({status}: {detail})")
    return RegistryError(f"consul refused {method} {path} ({status}: {detail})")


def ssl_context(options: ConsulOptions) -> ssl.SSLContext | None:
    """Built once, at construction, so no certificate file is read on the event loop."""
    if options.scheme != "https":
        return None
    try:
        context = ssl.create_default_context(cafile=options.ca)
        if options.cert:
            context.load_cert_chain(options.cert, options.key)
    except (OSError, ssl.SSLError) as exc:  # unreadable, or not PEM
        files = ", ".join(
            f"{k}={v!r}" for k, v in (("ca", options.ca), ("cert", options.cert), ("key", options.key)) if v
        )
        raise ConfigError(f"registry: consul TLS files ({files}) cannot be used: {exc}") from None
    return context
