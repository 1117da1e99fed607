;; echo: replies with the request payload.  The smallest ABI v1 guest.
(module
  (memory (export "memory") 1)
  ;; A bump allocator: every call starts from the same offset.
  (global $heap (mut i32) (i32.const 1024))
  (func (export "wh_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    ;; grow memory if the bump pointer passed its end
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow
        (i32.add (i32.div_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                            (i32.const 65536)) (i32.const 1))))))
    (local.get $ptr))
  (func (export "wh_handle") (param $ptr i32) (param $len i32) (result i64)
    (global.set $heap (i32.const 1024))
    ;; reply = the request itself: (ptr << 32) | len
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
