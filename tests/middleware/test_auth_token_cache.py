"""The server remembers a caller's last verified token; a repeat is still checked for expiry and match."""

from __future__ import annotations

import asyncio
import time

from grpcmesh.middleware.auth import AuthServerInterceptor, sign_caller

KEY = "token-cache-test-key-0123456789abc"


async def test_repeated_token_is_accepted_until_it_expires_and_others_are_checked() -> None:
    auth = AuthServerInterceptor(KEY, max_clock_skew=10.0)
    # Tokens carry whole seconds: sign at the start of a second, 9 s in the past, so the token is
    # 9.0-9.5 s old during the checks below and expires (older than 10 s) within about a second.
    await asyncio.sleep(1.0 - time.time() % 1.0)
    token = sign_caller("orders", KEY, timestamp=int(time.time()) - 9)
    assert auth._verify_caller("orders", token, KEY)
    assert auth._verify_caller("orders", token, KEY)  # the remembered token
    assert not auth._verify_caller("orders", token[:-1] + ("0" if token[-1] != "0" else "1"), KEY)
    assert not auth._verify_caller("billing", token, KEY)  # signed for another caller
    assert auth._verify_caller("orders", token, KEY)  # a forged attempt did not evict the good one
    deadline = time.monotonic() + 15.0  # expires ~1 s from now; the rest is margin for a loaded machine
    while auth._verify_caller("orders", token, KEY):
        assert time.monotonic() < deadline, "a remembered token must still expire"
        await asyncio.sleep(0.1)
