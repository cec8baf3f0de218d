"""The protected-content list against a local HTTP server (the real API is on the internet)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from prism.app.protected import ProtectedList

H1 = "a1" * 48
H2 = "b2" * 48


async def api(payloads: list[object]) -> tuple[web.AppRunner, str, list[int]]:
    calls = [0]

    async def handler(request: web.Request) -> web.Response:
        calls[0] += 1
        body = payloads[min(calls[0] - 1, len(payloads) - 1)]
        if body is None:
            return web.Response(status=502)
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/file/list_protected", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/file/list_protected", calls


async def test_list_is_fetched_once_and_cached():
    runner, url, calls = await api(
        [{"success": True, "error": None, "data": [{"sd_hash": H1, "claim_id": "x"}]}]
    )
    plist = ProtectedList(url, ttl=60)
    try:
        results = await asyncio.gather(*(plist.is_protected(H1) for _ in range(20)))
        assert all(results)
        assert await plist.is_protected(H2) is False
        assert calls[0] == 1
    finally:
        await plist.close()
        await runner.cleanup()


async def test_failed_fetch_means_not_protected_and_is_logged(caplog):
    runner, url, _calls = await api([None, {"success": False, "error": "nope", "data": []}])
    plist = ProtectedList(url, ttl=60)
    caplog.set_level("INFO", logger="prism.app")
    try:
        assert await plist.is_protected(H1) is False
        assert plist.failures == 1
        assert "fetch failed" in caplog.text
    finally:
        await plist.close()
        await runner.cleanup()


async def test_stale_list_is_served_while_refreshing():
    runner, url, _calls = await api(
        [
            {"success": True, "data": [{"sd_hash": H1}]},
            {"success": True, "data": [{"sd_hash": H2}]},
        ]
    )
    now = [1000.0]
    plist = ProtectedList(url, ttl=60, clock=lambda: now[0])
    try:
        assert await plist.is_protected(H1) is True
        now[0] += 61
        assert await plist.is_protected(H1) is True  # stale answer, refresh started
        await plist.wait_for_refresh()
        assert await plist.is_protected(H2) is True
        assert await plist.is_protected(H1) is False
    finally:
        await plist.close()
        await runner.cleanup()


async def test_empty_url_disables_the_list():
    plist = ProtectedList("")
    assert await plist.is_protected(H1) is False
    assert plist.fetches == 0


async def test_failures_are_logged_once_then_only_on_state_changes(caplog):
    good = {"success": True, "error": None, "data": [{"sd_hash": H1, "claim_id": "x"}]}
    runner, url, calls = await api([None, None, None, good, None])
    now = [0.0]
    plist = ProtectedList(url, ttl=60, clock=lambda: now[0])
    caplog.set_level("INFO", logger="prism.app")
    try:
        for _ in range(5):
            await plist.is_protected(H1)
            await plist.wait_for_refresh()
            now[0] += 61
        assert calls[0] == 5
        lines = [r.getMessage() for r in caplog.records if "protected list" in r.getMessage()]
        assert len(lines) == 3, lines
        assert "fetch failed" in lines[0] and "fetched again" in lines[1] and "fetch failed" in lines[2]
        assert all(r.levelname == "INFO" for r in caplog.records if "protected list" in r.getMessage())
    finally:
        await plist.close()
        await runner.cleanup()
