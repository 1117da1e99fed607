/* fetch: GETs the URL given as the payload through the host's http.fetch and
 * replies with "<status>\n<body>".  Host errors (for example "not_granted"
 * when the deployment may not use the network) fail the call with
 * "<code>: <message>". */
#define WASMHIVE_IMPLEMENTATION
#include "wasmhive.h"

#include <string.h>

int handle(const uint8_t *req, uint32_t len, wh_reply *out) {
    const char *url = wh_arena_strndup((const char *)req, len);
    if (url == NULL) return WH_ERR_NOMEM;
    wh_fetch_response resp;
    int rc = wh_fetch_get(url, &resp);
    if (rc != WH_OK) {
        if (rc == WH_ERR_HOST) {
            const char *code = wh_last_error_code(), *msg = wh_last_error_message();
            uint32_t cl = (uint32_t)strlen(code), ml = (uint32_t)strlen(msg);
            char *text = wh_arena_alloc(cl + 2 + ml);
            if (text == NULL) return WH_ERR_NOMEM;
            memcpy(text, code, cl);
            memcpy(text + cl, ": ", 2);
            memcpy(text + cl + 2, msg, ml);
            wh_fail_bytes(text, cl + 2 + ml);
        } else {
            wh_fail(wh_strerror(rc));
        }
        return rc;
    }
    char status[24];
    uint32_t sl = wh_fmt_i64(status, resp.status);
    status[sl++] = '\n';
    uint8_t *reply = wh_arena_alloc(sl + resp.body_len);
    if (reply == NULL) return WH_ERR_NOMEM;
    memcpy(reply, status, sl);
    if (resp.body_len) memcpy(reply + sl, resp.body, resp.body_len);
    wh_reply_ref(out, reply, sl + resp.body_len);
    return 0;
}
