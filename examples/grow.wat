;; grow: echoes its request, and leaks one 64 KiB page of memory per call, as a
;; program with a memory leak does.  When the memory limit refuses the page it
;; traps, which the runtime reports as OutOfMemory; the supervisor then replaces
;; the actor with a fresh instance.  Under memory_limit=L an actor serves about
;; L / 64 KiB calls before that happens.  Used by the stress harness's memory
;; scenarios (examples/stress/memory-bomb.toml).
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "wh_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (block $ok (loop $grow
      (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (unreachable)))
      (br $grow)))
    (local.get $ptr))
  (func (export "wh_handle") (param $ptr i32) (param $len i32) (result i64)
    (global.set $heap (i32.const 1024))
    ;; the leak: one more page, never used again
    (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (unreachable)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
