"""The server remembers a caller's last verified token; a repeat is still checked for expiry and match."""

from __future__ import annotations

import asyncio
import time

from grpcmesh.middleware.auth import ServerAuth, sign_caller

KEY = "token-cache-test-key-0123456789abc"


async def test_repeated_token_is_accepted_until_it_expires_and_others_are_checked() -> None:
    auth = ServerAuth(KEY, max_clock_skew=10.0)
    # Tokens carry whole seconds: signed 8 s in the past, the token is 8-9 s old during the checks
    # below (a second of margin for a stalled machine) and expires (older than 10 s) within ~2 s.
    token = sign_caller("orders", KEY, timestamp=int(time.time()) - 8)
    assert auth._verify_caller("orders", token, KEY)
    assert auth._verify_caller("orders", token, KEY)  # the remembered token
    assert not auth._verify_caller("orders", token[:-1] + ("0" if token[-1] != "0" else "1"), KEY)
    assert not auth._verify_caller("billing", token, KEY)  # signed for another caller
    assert auth._verify_caller("orders", token, KEY)  # a forged attempt did not evict the good one
    deadline = time.monotonic() + 15.0  # expires ~2 s from now; the rest is margin for a loaded machine
    while auth._verify_caller("orders", token, KEY):
        assert time.monotonic() < deadline, "a remembered token must still expire"
        await asyncio.sleep(0.1)
