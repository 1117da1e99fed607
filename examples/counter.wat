;; counter: counts its calls in the host's key-value store with the host call
;; {"op": "kv.incr", "key": "hits"} and replies with the raw msgpack result,
;; e.g. {"ok": true, "value": 3, "error": nil, "v": 1}.  Shows `host_call`.
(module
  (import "wasmhive" "host_call" (func $host_call (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  ;; msgpack: fixmap(2) "op" "kv.incr" "key" "hits"
  (data (i32.const 16) "\82\a2op\a7kv.incr\a3key\a4hits")
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
    ;; the request's 21 bytes are at 16; the host writes the result into memory
    ;; it gets from wh_alloc and returns its location, which is our reply.
    (local $result i64)
    (local.set $result (call $host_call (i32.const 16) (i32.const 21)))
    (global.set $heap (i32.const 1024))
    (local.get $result)))
