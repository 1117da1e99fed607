/* stream_counter: the payload is a decimal N; emits "1\n", "2\n", ... "N\n" as
 * N stream chunks and replies with nothing.  A payload that is not a
 * non-negative integer fails the call. */
#define WASMHIVE_IMPLEMENTATION
#include "wasmhive.h"

int handle(const uint8_t *req, uint32_t len, wh_reply *out) {
    (void)out;
    int64_t n;
    if (wh_parse_i64((const char *)req, len, &n) != WH_OK || n < 0) {
        wh_fail("stream_counter: the payload must be a non-negative decimal integer");
        return 1;
    }
    char line[24];
    for (int64_t i = 1; i <= n; i++) {
        uint32_t k = wh_fmt_i64(line, i);
        line[k++] = '\n';
        wh_emit(line, k); /* the host copies the chunk before emit returns */
    }
    return 0;
}
