"""The wasmhive demo: deploy the bundled example modules and call them.

Run it with ``make run`` (or ``python examples/demo.py``).  It prints what it
does, under trio; the same code runs under asyncio.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec
import trio

from wasmhive.runtime import GuestTrap, Runtime, WasmhiveError

HERE = Path(__file__).resolve().parent


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="  log  %(name)s %(message)s")
    async with Runtime() as rt:
        print("wasmhive demo: deploying the example modules from", HERE)
        await rt.deploy("echo", HERE / "echo.wat", mode="inline")
        await rt.deploy("stream", HERE / "stream.wat")
        await rt.deploy("counter", HERE / "counter.wat")
        await rt.deploy("faulty", HERE / "faulty.wat", instances=2)
        await rt.deploy("hello", HERE / "hello.js")  # JavaScript on QuickJS-NG
        for name, stats in rt.stats().functions.items():
            print(f"  deployed {name:8} mode={stats.mode:6} timeout={stats.timeout:g}s instances={stats.instances}")

        print("\n1. echo (inline: runs on the event loop)")
        print("  ", await rt.invoke("echo", b"hello, wasmhive"))
        started = time.perf_counter()
        for _ in range(10_000):
            await rt.invoke("echo", b"x" * 64)
        print(f"   10,000 calls in {time.perf_counter() - started:.3f}s")

        print("\n2. stream (thread: runs on the actor's own thread; chunks arrive as emitted)")
        async for chunk in rt.stream("stream", b"first line\nsecond line\nthird line"):
            print("   chunk:", chunk)

        print("\n3. counter (host call kv.incr; the count lives in the host's key-value store)")
        for _ in range(3):
            reply = msgspec.msgpack.decode(await rt.invoke("counter", b""))
            print("   ", reply)

        print("\n4. faulty (a trap is a typed error; the actor is replaced, nothing else is touched)")
        try:
            await rt.invoke("faulty", b"!boom")
        except GuestTrap as exc:
            print(f"   {type(exc).__name__}: {exc}")
        print("   next call:", await rt.invoke("faulty", b"still serving"))

        print("\n5. hello.js (JavaScript; module state lives in the actor)")
        for name in (b'{"name": "wasmhive"}', b'{"name": "you"}'):
            print("   ", await rt.invoke("hello", name))

        print("\n6. bad input gets a typed error that says what to fix")
        for label, call in (
            ("unknown function", rt.invoke("nope", b"")),
            ("not wasm", rt.deploy("junk", b"this is not wasm")),
        ):
            try:
                await call
            except WasmhiveError as exc:
                print(f"   {label}: {type(exc).__name__}: {exc}")

        print("\nstats:")
        for name, stats in rt.stats().functions.items():
            print(f"   {name:8} calls={stats.calls} failures={stats.failures} crashes={stats.crashes}")


if __name__ == "__main__":
    trio.run(main)
