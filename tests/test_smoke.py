from __future__ import annotations

import aiokv


async def test_a_value_set_is_read_back_after_reopening(store_path: str) -> None:
    async with aiokv.AioKV(store_path) as kv:
        await kv.set("last_command", "ping")
    async with aiokv.AioKV(store_path) as kv:
        assert await kv.get("last_command") == "ping"
