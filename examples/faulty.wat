;; faulty: echoes its request, except that a request starting with "!" makes it
;; trap.  Shows a typed GuestTrap and the runtime replacing the crashed actor.
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
    (if (i32.and (i32.gt_u (local.get $len) (i32.const 0))
                 (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33)))   ;; '!'
      (then (unreachable)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
