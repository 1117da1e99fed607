"""Small ABI v1 guests written in WAT, for the tests.

Each constant is a complete module.  :func:`module` wraps a ``wh_handle`` body
(plus extra imports and functions) with the memory export and the bump
allocator every guest here shares.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

IMPORT_EMIT = '(import "wasmhive" "emit" (func $emit (param i32 i32)))'
IMPORT_FAIL = '(import "wasmhive" "fail" (func $fail (param i32 i32)))'
IMPORT_LOG = '(import "wasmhive" "log" (func $log (param i32 i32 i32)))'
IMPORT_HOST_CALL = '(import "wasmhive" "host_call" (func $host_call (param i32 i32) (result i64)))'


def module(handle_body: str, *, imports: str = "", extra: str = "", data: str = "", pages: int = 1) -> str:
    """A guest whose ``wh_handle(ptr, len)`` runs ``handle_body`` (which must leave an i64)."""
    return f"""
(module
  {imports}
  (memory (export "memory") {pages})
  {data}
  (global $heap (mut i32) (i32.const 65536))
  (global $base (mut i32) (i32.const 0))
  (global $in_call (mut i32) (i32.const 0))
  ;; Bump allocator above the initial pages, growing memory as needed.  An
  ;; allocation made by the host before wh_handle (the payload) starts a new
  ;; call, so it frees everything; allocations during the call (host-call
  ;; results) keep what is there.
  (func $alloc (export "wh_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (if (i32.eqz (global.get $base))
      (then (global.set $base (i32.mul (memory.size) (i32.const 65536)))))
    (if (i32.eqz (global.get $in_call)) (then (global.set $heap (global.get $base))))
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (block $done
      (loop $grow
        (br_if $done (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (unreachable)))
        (br $grow)))
    (local.get $ptr))
  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  {extra}
  (func (export "wh_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $r i64) (local $out i64)
    (global.set $in_call (i32.const 1))
    (local.set $out (block (result i64) {handle_body}))
    (global.set $in_call (i32.const 0))
    (local.get $out)))
"""


ECHO = (EXAMPLES / "echo.wat").read_text()

#: Replies with the payload.
ECHO_LOCAL = module("(call $pack (local.get $ptr) (local.get $len))")

#: Traps with `unreachable`.
TRAP = module("(unreachable)")

#: Divides by zero.
DIV_ZERO = module("(i64.extend_i32_u (i32.div_u (i32.const 1) (i32.const 0)))")

#: Never returns.
INFINITE_LOOP = module("(loop $forever (br $forever)) (i64.const 0)")

#: Grows memory until refused, then traps (what a C allocator's abort does).
MEMORY_BOMB = module(
    """(loop $more
         (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
       (unreachable)"""
)

#: Counts to 2,000,000 and replies with the payload (burns fuel, finishes quickly without a budget).
BUSY_ECHO = module(
    """(block $done (loop $spin
         (br_if $done (i32.ge_u (local.get $i) (i32.const 2000000)))
         (local.set $i (i32.add (local.get $i) (i32.const 1)))
         (br $spin)))
       (call $pack (local.get $ptr) (local.get $len))"""
)

#: Replies with a location far outside its memory.
BAD_REPLY = module("(call $pack (i32.const 0x7fff0000) (i32.const 4096))")

#: Reports the payload as an application error through `fail`.
FAIL_WITH_PAYLOAD = module(
    "(call $fail (local.get $ptr) (local.get $len)) (i64.const 0)", imports=IMPORT_FAIL
)

#: Emits the payload three times as three chunks, then replies "end".
EMIT_THREE = module(
    """(call $emit (local.get $ptr) (local.get $len))
       (call $emit (local.get $ptr) (local.get $len))
       (call $emit (local.get $ptr) (local.get $len))
       (call $pack (i32.const 16) (i32.const 3))""",
    imports=IMPORT_EMIT,
    data='(data (i32.const 16) "end")',
)

#: Passes the payload to `host_call` verbatim and replies with the raw msgpack result.
HOST_PROXY = module(
    "(call $host_call (local.get $ptr) (local.get $len))",
    imports=IMPORT_HOST_CALL,
)

#: Logs the payload at level 3 (warn) and replies with it.
LOGGER = module(
    "(call $log (i32.const 3) (local.get $ptr) (local.get $len)) (call $pack (local.get $ptr) (local.get $len))",
    imports=IMPORT_LOG,
)

#: Calls `emit` with a range outside its memory.
BAD_EMIT = module("(call $emit (i32.const 0x7fff0000) (i32.const 16)) (i64.const 0)", imports=IMPORT_EMIT)

#: Sends bytes that are not msgpack to `host_call` (0xc1 is never used by msgpack).
BAD_HOST_CALL = module(
    "(call $host_call (i32.const 16) (i32.const 1))",
    imports=IMPORT_HOST_CALL,
    data='(data (i32.const 16) "\\c1")',
)

# The msgpack map {"op": "kv.delete", "key": "go"}.
_KV_DELETE_GO = "\\82\\a2op\\a9kv.delete\\a3key\\a2go"
_KV_DELETE_GO_LEN = 1 + 3 + 10 + 4 + 3

#: Emits "first", then polls kv.delete("go") until it returns true, emits "second", replies "done".
#: Lets a test check that a chunk arrives while the call is still running, without timing.
EMIT_THEN_WAIT = module(
    f"""(call $emit (i32.const 100) (i32.const 5))
        (block $go (loop $poll
          (local.set $r (call $host_call (i32.const 16) (i32.const {_KV_DELETE_GO_LEN})))
          ;; the result map is {{"ok": true, "value": <bool>, ...}}: byte 11 holds value
          (br_if $go (i32.eq (i32.load8_u (i32.add (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32))) (i32.const 11)))
                             (i32.const 0xc3)))
          (br $poll)))
        (call $emit (i32.const 110) (i32.const 6))
        (call $pack (i32.const 120) (i32.const 4))""",
    imports=IMPORT_EMIT + IMPORT_HOST_CALL,
    data=f'(data (i32.const 16) "{_KV_DELETE_GO}") (data (i32.const 100) "first") '
    '(data (i32.const 110) "second") (data (i32.const 120) "done")',
)

#: A WASI-importing guest: writes the payload to stdout with fd_write and replies with it.
WASI_STDOUT = module(
    """;; iovec at 32: {ptr, len}
       (i32.store (i32.const 32) (local.get $ptr))
       (i32.store (i32.const 36) (local.get $len))
       (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 48)))
       (call $pack (local.get $ptr) (local.get $len))""",
    imports='(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))',
)

#: Has wh_init, which stores 42 at address 8; replies with the 4 bytes at address 8.
WITH_INIT = module(
    "(call $pack (i32.const 8) (i32.const 4))",
    extra='(func (export "wh_init") (i32.store (i32.const 8) (i32.const 42)))',
)

#: Counts calls in a global and replies with the count as 4 little-endian bytes.
COUNTER = module(
    """(i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1)))
       (call $pack (i32.const 8) (i32.const 4))"""
)

#: Missing wh_handle.
NO_HANDLE = """(module (memory (export "memory") 1)
  (func (export "wh_alloc") (param i32) (result i32) (i32.const 0)))"""

#: wh_handle with the wrong signature.
WRONG_HANDLE = """(module (memory (export "memory") 1)
  (func (export "wh_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "wh_handle") (param i32) (result i32) (i32.const 0)))"""

#: Imports a host function that ABI v1 does not have.
UNKNOWN_IMPORT = """(module (import "wasmhive" "teleport" (func (param i32)))
  (memory (export "memory") 1)
  (func (export "wh_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "wh_handle") (param i32 i32) (result i64) (i64.const 0)))"""

#: Imports from a module the host does not provide.
FOREIGN_IMPORT = """(module (import "env" "abort" (func (param i32)))
  (memory (export "memory") 1)
  (func (export "wh_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "wh_handle") (param i32 i32) (result i64) (i64.const 0)))"""

# Polls kv.delete("go") until it answers true.  Between polls it spins a while
# (so that it does not hammer the host), and it frees each result.
_WAIT_FOR_GO = f"""
        (block $go (loop $poll
          (local.set $i (global.get $heap))
          (local.set $r (call $host_call (i32.const 16) (i32.const {_KV_DELETE_GO_LEN})))
          (br_if $go (i32.eq (i32.load8_u (i32.add (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32))) (i32.const 11)))
                             (i32.const 0xc3)))
          (global.set $heap (local.get $i))
          (local.set $i (i32.const 0))
          (block $rested (loop $spin
            (br_if $rested (i32.ge_u (local.get $i) (i32.const 300000)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $spin)))
          (br $poll)))"""

#: Payload-driven: a first byte '?' waits until kv key "go" is set (and deletes it), then echoes;
#: '!' waits the same way, then traps; anything else echoes at once.
GATED = module(
    f"""(if (i32.gt_u (local.get $len) (i32.const 0))
          (then
            (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0x3f)) (then {_WAIT_FOR_GO}))
            (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0x21)) (then {_WAIT_FOR_GO} (unreachable)))))
        (call $pack (local.get $ptr) (local.get $len))""",
    imports=IMPORT_HOST_CALL,
    data=f'(data (i32.const 16) "{_KV_DELETE_GO}")',
)

#: Counts its calls in memory (reply: the count, 4 bytes little-endian); a payload starting with '!' traps.
COUNTER_OR_TRAP = module(
    """(if (i32.gt_u (local.get $len) (i32.const 0))
         (then (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0x21)) (then (unreachable)))))
       (i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1)))
       (call $pack (i32.const 8) (i32.const 4))"""
)

#: Echoes its payload; a payload starting with '!' traps.
ECHO_OR_TRAP = module(
    """(if (i32.gt_u (local.get $len) (i32.const 0))
         (then (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0x21)) (then (unreachable)))))
       (call $pack (local.get $ptr) (local.get $len))"""
)

_WASI_IO = """
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))"""

#: A WASI command: copies stdin to stdout, 4 KiB per read and write, then returns (exit 0).
WASI_CAT = f"""(module {_WASI_IO}
  (memory (export "memory") 1)
  (func (export "_start")
    (local $n i32)
    (loop $more
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then
          (i32.store (i32.const 16) (i32.const 1024))
          (i32.store (i32.const 20) (local.get $n))
          (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
          (br $more))))))"""

#: A WASI command: writes "partial" to stdout and "something broke" to stderr, then exits with status 3.
WASI_EXIT_3 = f"""(module {_WASI_IO}
  (memory (export "memory") 1)
  (data (i32.const 100) "partial")
  (data (i32.const 200) "something broke\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 7))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 200)) (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 3))))"""

#: A WASI command that counts its runs in a global: always prints "1" (each call is a fresh instance).
WASI_FRESH = f"""(module {_WASI_IO}
  (memory (export "memory") 1)
  (global $runs (mut i32) (i32.const 48))
  (func (export "_start")
    (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
    (i32.store8 (i32.const 100) (global.get $runs))
    (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 0))))"""

#: A WASI command that never ends.
WASI_SPIN = f"""(module {_WASI_IO}
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"""
