"""The access-log fast path of ``redact_secrets`` skips only events that cannot hold a secret."""

from __future__ import annotations

from grpcmesh.middleware.logging import REDACTED, SAFE_FIELDS, SECRET_NAME, redact_secrets


def test_safe_field_names_do_not_look_like_secrets() -> None:
    assert [name for name in SAFE_FIELDS if SECRET_NAME.search(name)] == []


def test_access_log_event_passes_and_any_other_key_is_still_redacted() -> None:
    access = {"event": "rpc", "level": "info", "method": "/a.B/C", "code": "OK", "trace_id": "ab"}
    assert redact_secrets(None, "info", dict(access)) == access
    leaked = redact_secrets(None, "info", {**access, "password": "hunter2", "x-service-key": "k"})
    assert leaked["password"] == REDACTED
    assert leaked["x-service-key"] == REDACTED
    nested = redact_secrets(None, "info", {**access, "peer": {"auth_token": "t"}})
    assert nested["peer"] == {"auth_token": REDACTED}
