;; stream: emits each line of the request as its own stream chunk, then
;; replies with nothing.  Shows the `emit` import of ABI v1.
(module
  (import "wasmhive" "emit" (func $emit (param i32 i32)))
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
    (local $i i32) (local $start i32) (local $end i32)
    (global.set $heap (i32.const 1024))
    (local.set $start (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $i (local.get $ptr))
    (block $done (loop $scan
      (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
      (if (i32.eq (i32.load8_u (local.get $i)) (i32.const 10))   ;; '\n' ends a line
        (then
          (call $emit (local.get $start) (i32.sub (i32.add (local.get $i) (i32.const 1)) (local.get $start)))
          (local.set $start (i32.add (local.get $i) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $scan)))
    ;; a last line without '\n'
    (if (i32.lt_u (local.get $start) (local.get $end))
      (then (call $emit (local.get $start) (i32.sub (local.get $end) (local.get $start)))))
    (i64.const 0)))
