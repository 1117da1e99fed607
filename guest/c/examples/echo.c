/* echo: replies with the payload, unchanged (no copy: the payload lives in the
 * arena until the call has returned). */
#define WASMHIVE_IMPLEMENTATION
#include "wasmhive.h"

int handle(const uint8_t *req, uint32_t len, wh_reply *out) {
    wh_reply_ref(out, req, len);
    return 0;
}
