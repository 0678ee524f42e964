"""Service-to-service authentication and per-caller authorization: a server check and a client observer.

* **Shared key** (the original Go design's ``ServiceAuthInterceptor``): callers send the mesh's
  shared key in metadata ``x-service-key``; that design's name ``service-auth-key`` is accepted too. It is
  compared in constant time (``hmac.compare_digest``); missing or wrong → UNAUTHENTICATED.
* **Signed caller** (what mesh channels send): one header ``x-mesh-auth`` =
  ``<unix-seconds>.<hex HMAC-SHA256(key, "<caller>\\n<unix-seconds>")>.<caller>``, valid within a
  bounded clock skew. It proves the caller holds the shared key without sending the key, and
  names the caller, so it stands for both the key and the identity: one header per call
  instead of three (each header a server receives costs grpc several thousand instructions),
  and a captured header is useless a minute later, where a captured key never expires.
* **Caller identity**, the older form (still accepted): ``x-mesh-caller`` names the caller and
  ``x-mesh-caller-token`` = ``<unix-seconds>.<hex HMAC>`` proves it, beside ``x-service-key``; or
  the CN/SAN of the caller's verified mTLS certificate.
* **Policy**: caller service → allowed method patterns (``fnmatch`` on ``/pkg.Service/Method``);
  ``"*"`` as caller applies to every identified caller. Not allowed → PERMISSION_DENIED.

Health checking and reflection are exempt by default so probes and tools work unauthenticated.
Keys and tokens are never logged. ``MeshServer`` runs :class:`ServerAuth` as its pipeline's
check; the ``auth_*_interceptor*`` functions give the same checks as grpc.aio interceptors.
"""

from __future__ import annotations

import contextvars
import fnmatch
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence

import grpc
import structlog

from grpcmesh.errors import ConfigError
from grpcmesh.middleware.behavior import Context
from grpcmesh.middleware.client_side import ClientCall, ClientInterceptor, client_interceptors
from grpcmesh.middleware.server_side import ServerCall, ServerConcern, ServerObservingInterceptor, ServerPipeline
from grpcmesh.security.tls import peer_identities

SERVICE_KEY_HEADER = "x-service-key"
SEED_SERVICE_KEY_HEADER = "service-auth-key"
CALLER_HEADER = "x-mesh-caller"
CALLER_TOKEN_HEADER = "x-mesh-caller-token"  # noqa: S105 (a header name, not a secret)
AUTH_HEADER = "x-mesh-auth"
"""The signed caller header mesh channels send: ``<unix-seconds>.<hex HMAC>.<caller>`` (see the module docstring)."""

DEFAULT_EXEMPT = (
    "/grpc.health.v1.Health/*",
    "/grpc.reflection.v1.ServerReflection/*",
    "/grpc.reflection.v1alpha.ServerReflection/*",
)
"""Methods callable without a key or identity, as ``fnmatch`` patterns."""

DEFAULT_MAX_CLOCK_SKEW = 60.0

_MAX_KNOWN_CALLERS = 1024
"""Callers whose last verified token the server remembers (bounds memory against made-up names)."""

_current_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("grpcmesh_caller", default=None)
_log = structlog.get_logger("grpcmesh.auth")


def current_caller() -> str | None:
    """Inside a handler behind the auth interceptor: the authenticated caller's service name, if any."""
    return _current_caller.get()


def _signature(key: str, caller: str, timestamp: int) -> str:
    return hmac.new(key.encode(), f"{caller}\n{timestamp}".encode(), hashlib.sha256).hexdigest()


def sign_caller(caller: str, key: str, timestamp: float | None = None) -> str:
    """A token proving ``caller`` knows the shared ``key``, for metadata ``x-mesh-caller-token``."""
    seconds = int(time.time() if timestamp is None else timestamp)
    return f"{seconds}.{_signature(key, caller, seconds)}"


def verify_caller(
    caller: str, token: str, key: str, max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW, now: float | None = None
) -> bool:
    """True when ``token`` was made by ``sign_caller(caller, key)`` within ``max_clock_skew`` seconds of now."""
    seconds_text, _, signature = token.partition(".")
    # ASCII digits only ("²".isdigit() is True) and few of them (int() refuses over 4,300 digits).
    if not (seconds_text.isascii() and seconds_text.isdigit() and len(seconds_text) <= 16) or not signature:
        return False
    seconds = int(seconds_text)
    if abs((time.time() if now is None else now) - seconds) > max_clock_skew:
        return False
    return hmac.compare_digest(signature.encode(), _signature(key, caller, seconds).encode())


def signed_caller_header(caller: str, key: str, timestamp: float | None = None) -> str:
    """The value of ``x-mesh-auth`` for ``caller``: its token, then its name."""
    return f"{sign_caller(caller, key, timestamp)}.{caller}"


class AuthRefused(Exception):
    """Why :meth:`ServerAuth.check` refuses a call: the status code and the details the caller gets."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class ServerAuth:
    """Checks the shared key, then (with a policy) the caller's identity and permissions."""

    def __init__(
        self,
        service_key: str | None,
        policy: Mapping[str, Sequence[str]] | None = None,
        exempt: Sequence[str] = DEFAULT_EXEMPT,
        max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW,
    ) -> None:
        if service_key is not None and not service_key:
            raise ConfigError("security.service_auth_key: empty; set a long random key or leave it unset")
        if service_key is None and policy is None:
            raise ConfigError("security: the auth interceptor needs service_auth_key, a caller policy, or both")
        self._key = service_key
        self._key_bytes = service_key.encode() if service_key is not None else b""
        self._policy = {caller: tuple(patterns) for caller, patterns in (policy or {}).items()}
        self._enforce_policy = policy is not None
        self._exempt = tuple(exempt)
        self._max_clock_skew = max_clock_skew
        self._verified: dict[str, tuple[bytes, int]] = {}
        """Each caller's last verified token (as bytes) and its signing second."""
        self._decisions: dict[tuple[str, str], bool] = {}

    def __repr__(self) -> str:  # never the key
        return f"<ServerAuth key={'set' if self._key else 'none'} policy={sorted(self._policy)}>"

    def is_exempt(self, method: str) -> bool:
        return any(fnmatch.fnmatchcase(method, pattern) for pattern in self._exempt)

    def server_concern(self) -> ServerConcern:
        """The pipeline's auth check, applied to every method but the exempt ones (decided once per method)."""
        return ServerConcern("auth", check=self.refusal, applies=lambda method: not self.is_exempt(method))

    def refusal(self, call: ServerCall) -> tuple[grpc.StatusCode, str] | None:
        """Why ``call`` is refused (logged), or ``None``: the caller's identity is then current
        for the handler (:func:`current_caller`). A plain function: no coroutine per call."""
        try:
            caller = self.check(call.full_method, call.header, call.context)
        except AuthRefused as refused:
            _log.warning(
                "rpc refused",
                method=call.full_method,
                peer=_peer(call.context),
                code=refused.code.name,
                reason=refused.details,
            )
            return refused.code, refused.details
        _current_caller.set(caller)
        return None

    def check(self, method: str, header: Callable[[str], str | None], context: Context) -> str | None:
        """The caller's identity (``None``: none needed, none given), or :class:`AuthRefused`.

        ``header(key)`` reads the call's metadata. A signed ``x-mesh-auth`` stands for both the key
        and the identity; otherwise the key is checked, then the older caller headers or the mTLS peer.
        """
        signed = header(AUTH_HEADER)
        if signed is not None:
            identities: tuple[str, ...] = (self._signed_caller(signed),)
        else:
            if self._key is not None:
                given = header(SERVICE_KEY_HEADER) or header(SEED_SERVICE_KEY_HEADER)
                if given is None:
                    raise AuthRefused(grpc.StatusCode.UNAUTHENTICATED, "missing service key")
                if not hmac.compare_digest(given.encode(), self._key_bytes):
                    raise AuthRefused(grpc.StatusCode.UNAUTHENTICATED, "invalid service key")
            identities = self._identities(header, context)
        if not self._enforce_policy:
            return identities[0] if identities else None
        if not identities:
            raise AuthRefused(
                grpc.StatusCode.UNAUTHENTICATED, "caller identity required (signed caller token or client certificate)"
            )
        for identity in identities:
            if self._allowed(identity, method):
                return identity
        raise AuthRefused(grpc.StatusCode.PERMISSION_DENIED, f"caller {identities[0]!r} may not call {method}")

    def _allowed(self, identity: str, method: str) -> bool:
        """The policy's answer for (caller, method), remembered: the patterns are fixed."""
        key = (identity, method)
        found = self._decisions.get(key)
        if found is None:
            patterns = self._policy.get(identity, ()) + self._policy.get("*", ())
            found = any(fnmatch.fnmatchcase(method, pattern) for pattern in patterns)
            if len(self._decisions) < _MAX_KNOWN_CALLERS:
                self._decisions[key] = found
        return found

    def _identities(self, header: Callable[[str], str | None], context: Context) -> tuple[str, ...]:
        caller = header(CALLER_HEADER)
        token = header(CALLER_TOKEN_HEADER)
        if caller is not None or token is not None:
            if caller is None or token is None or self._key is None:
                raise AuthRefused(grpc.StatusCode.UNAUTHENTICATED, "caller token cannot be verified")
            if not self._verify_caller(caller, token, self._key):
                raise AuthRefused(grpc.StatusCode.UNAUTHENTICATED, "invalid or expired caller token")
            return (caller,)
        return peer_identities(context)

    def _signed_caller(self, signed: str) -> str:
        """The caller an ``x-mesh-auth`` value names, once its token verifies under the key."""
        if self._key is None:
            raise AuthRefused(grpc.StatusCode.UNAUTHENTICATED, "caller token cannot be verified")
        seconds, _, rest = signed.partition(".")
        signature, _, caller = rest.partition(".")
        if not caller or not self._verify_caller(caller, f"{seconds}.{signature}", self._key):
            raise AuthRefused(grpc.StatusCode.UNAUTHENTICATED, "invalid or expired caller token")
        return caller

    def _verify_caller(self, caller: str, token: str, key: str) -> bool:
        """``verify_caller``, remembering each caller's last good token: a client signs once per
        second, so most calls repeat it. A repeat is compared in constant time and its clock
        skew checked again; only a new token pays for the HMAC."""
        given = token.encode()
        known = self._verified.get(caller)
        if known is not None and hmac.compare_digest(known[0], given):
            return abs(time.time() - known[1]) <= self._max_clock_skew
        if not verify_caller(caller, token, key, self._max_clock_skew):
            return False
        if caller in self._verified or len(self._verified) < _MAX_KNOWN_CALLERS:
            self._verified[caller] = (given, int(token.partition(".")[0]))  # verified: the prefix is an int
        return True


def _peer(context: Context) -> str:
    try:
        return str(context.peer())
    except Exception:
        return "unknown"


class AuthServerInterceptor(ServerObservingInterceptor):
    """:class:`ServerAuth` as a grpc.aio server interceptor."""

    def __init__(
        self,
        service_key: str | None,
        policy: Mapping[str, Sequence[str]] | None = None,
        exempt: Sequence[str] = DEFAULT_EXEMPT,
        max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW,
    ) -> None:
        super().__init__(ServerPipeline([ServerAuth(service_key, policy, exempt, max_clock_skew).server_concern()]))


def auth_server_interceptor(
    service_key: str | None,
    policy: Mapping[str, Sequence[str]] | None = None,
    exempt: Sequence[str] = DEFAULT_EXEMPT,
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW,
) -> AuthServerInterceptor:
    """The server side: shared ``service_key`` check and, with ``policy``, per-caller authorization.

    ``policy`` maps caller service names (or ``"*"``) to ``fnmatch`` patterns of full method
    names, e.g. ``{"order-service": ["/shop.Payment/*"]}``; ``exempt`` lists methods open to all.
    """
    return AuthServerInterceptor(service_key, policy, exempt, max_clock_skew)


class ClientAuth:
    """Adds ``x-service-key``, or with ``caller`` the signed ``x-mesh-auth`` instead (re-signed once per second)."""

    def __init__(self, service_key: str | None, caller: str | None = None, *, legacy_headers: bool = False) -> None:
        """``legacy_headers``: send the key, ``x-mesh-caller`` and ``x-mesh-caller-token`` instead of
        ``x-mesh-auth``, for servers that predate it (``security.legacy_auth_headers``)."""
        if service_key is not None and not service_key:
            raise ConfigError("security.service_auth_key: empty; set a long random key or leave it unset")
        if caller is not None and service_key is None:
            raise ConfigError("service.name: a signed caller identity needs security.service_auth_key")
        self._key = service_key
        self._caller = caller
        self._legacy = legacy_headers
        self._headers: tuple[tuple[str, str], ...] = ((SERVICE_KEY_HEADER, service_key),) if service_key else ()
        self._signed: tuple[tuple[tuple[str, str], ...], int] = ((), -1)
        """The headers with the current caller token, and the second it was signed."""

    def __repr__(self) -> str:  # never the key
        return f"<ClientAuth caller={self._caller!r}>"

    def _current_headers(self, caller: str, key: str) -> tuple[tuple[str, str], ...]:
        """``x-mesh-auth`` signed this second (built once per second, not per call); the key itself is not sent."""
        now = int(time.time())
        headers, second = self._signed
        if second != now:
            if self._legacy:
                token = sign_caller(caller, key, now)
                headers = (*self._headers, (CALLER_HEADER, caller), (CALLER_TOKEN_HEADER, token))
            else:
                headers = ((AUTH_HEADER, signed_caller_header(caller, key, now)),)
            self._signed = (headers, now)
        return headers

    def observe_client(self, call: ClientCall) -> None:
        key = self._key
        if key is not None:
            call.put_headers(self._headers if self._caller is None else self._current_headers(self._caller, key))


def auth_client_interceptors(service_key: str | None, caller: str | None = None) -> list[ClientInterceptor]:
    """Client interceptors adding ``x-service-key``, or with ``caller`` a fresh signed ``x-mesh-auth``."""
    return client_interceptors(ClientAuth(service_key, caller).observe_client)
