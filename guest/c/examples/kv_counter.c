/* kv_counter: increments the kv counter "count" (or the key given as the
 * payload, if any) and replies with its new value as decimal text. */
#define WASMHIVE_IMPLEMENTATION
#include "wasmhive.h"

int handle(const uint8_t *req, uint32_t len, wh_reply *out) {
    const char *key = "count";
    if (len > 0) {
        key = wh_arena_strndup((const char *)req, len);
        if (key == NULL) return WH_ERR_NOMEM;
    }
    int64_t count;
    int rc = wh_kv_incr(key, 1, &count);
    if (rc != WH_OK) {
        wh_log(WH_LOG_ERROR, wh_last_error_message()); /* the host's message, if it answered ok=false */
        wh_fail(rc == WH_ERR_HOST ? wh_last_error_code() : wh_strerror(rc));
        return rc;
    }
    char text[24];
    return wh_reply_copy(out, text, wh_fmt_i64(text, count));
}
