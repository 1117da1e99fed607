/* sdk_test: a guest that exercises the SDK for tests/test_c_guests.py.
 *
 * The payload is "<command>" or "<command> <argument>"; see the dispatch in
 * handle() below.  Not an example: it checks SDK internals (the arena, the
 * msgpack reader and writer) and reports what it saw.
 */
#define WASMHIVE_IMPLEMENTATION
#include "wasmhive.h"

#include <stdlib.h>
#include <string.h>

/* ---- helpers --------------------------------------------------------------- */

static int starts(const char *s, uint32_t len, const char *cmd, const char **arg, uint32_t *arglen) {
    uint32_t n = (uint32_t)strlen(cmd);
    if (len < n || memcmp(s, cmd, n) != 0) return 0;
    if (len == n) {
        *arg = s + n;
        *arglen = 0;
        return 1;
    }
    if (s[n] != ' ') return 0;
    *arg = s + n + 1;
    *arglen = len - n - 1;
    return 1;
}

/* Split "a b" into a (NUL-terminated, in the arena) and the rest. */
static char *word(const char **s, uint32_t *len) {
    uint32_t i = 0;
    while (i < *len && (*s)[i] != ' ') i++;
    char *w = wh_arena_strndup(*s, i);
    if (i < *len) i++;
    *s += i;
    *len -= i;
    return w;
}

static int fail_rc(const char *what, int rc) {
    wh_logf(WH_LOG_WARN, "%s: %s (%s)", what, wh_strerror(rc), wh_last_error_code());
    char msg[160];
    uint32_t n = 0;
    const char *parts[] = {what, ": ", wh_strerror(rc), " [", wh_last_error_code(), "]"};
    for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        uint32_t l = (uint32_t)strlen(parts[i]);
        if (n + l > sizeof msg) l = sizeof msg - n;
        memcpy(msg + n, parts[i], l);
        n += l;
    }
    wh_fail_bytes(msg, n);
    return rc != 0 ? rc : 1;
}

static int reply_int(wh_reply *out, int64_t v) {
    char t[24];
    return wh_reply_copy(out, t, wh_fmt_i64(t, v));
}

static uint32_t fnv(const uint8_t *p, uint32_t n) {
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

/* ---- wh_init: host calls work, and the arena holds, before any call -------- */

static int init_status = -100;

WH_EXPORT("wh_init") void init(void) {
    int64_t a, b;
    if (wh_kv_incr("inits", 1, &a) != WH_OK) { init_status = -1; return; }
    const uint8_t *first;
    uint32_t first_len;
    if (wh_kv_set("init-key", "init-value", 10, 0) != WH_OK) { init_status = -2; return; }
    if (wh_kv_get("init-key", &first, &first_len) != 1) { init_status = -3; return; }
    /* a second host call must not overwrite the first result */
    if (wh_kv_incr("init-other", 1, &b) != WH_OK) { init_status = -4; return; }
    if (first_len != 10 || memcmp(first, "init-value", 10) != 0) { init_status = -5; return; }
    init_status = (int)a;
}

/* ---- msgpack: re-encode whatever the reader sees --------------------------- */

static int copy_value(wh_mp v, wh_mp_writer *w, int depth) {
    if (depth > 64) return WH_ERR_DECODE;
    int rc;
    switch (wh_mp_type(v)) {
    case WH_MP_NIL: wh_mp_nil(w); return WH_OK;
    case WH_MP_BOOL: { int b; if ((rc = wh_mp_read_bool(v, &b))) return rc; wh_mp_bool(w, b); return WH_OK; }
    case WH_MP_INT: { int64_t i; if ((rc = wh_mp_read_int(v, &i))) return rc; wh_mp_int(w, i); return WH_OK; }
    case WH_MP_FLOAT: { double d; if ((rc = wh_mp_read_float(v, &d))) return rc; wh_mp_float(w, d); return WH_OK; }
    case WH_MP_STR: { const char *s; uint32_t n; if ((rc = wh_mp_read_str(v, &s, &n))) return rc; wh_mp_str(w, s, n); return WH_OK; }
    case WH_MP_BIN: { const uint8_t *b; uint32_t n; if ((rc = wh_mp_read_bin(v, &b, &n))) return rc; wh_mp_bin(w, b, n); return WH_OK; }
    case WH_MP_ARRAY:
    case WH_MP_MAP: {
        wh_mp_iter it;
        uint32_t n;
        int is_map = wh_mp_type(v) == WH_MP_MAP;
        if ((rc = is_map ? wh_mp_map_size(v, &n) : wh_mp_array_size(v, &n))) return rc;
        if (is_map) wh_mp_map(w, n); else wh_mp_array(w, n);
        if ((rc = wh_mp_iter_begin(v, &it))) return rc;
        wh_mp k, val;
        while ((rc = wh_mp_iter_next(&it, &k, &val)) == 1) {
            if (is_map && (rc = copy_value(k, w, depth + 1))) return rc;
            if ((rc = copy_value(val, w, depth + 1))) return rc;
        }
        return rc;
    }
    case WH_MP_EXT: return WH_ERR_TYPE;
    default: return WH_ERR_DECODE;
    }
}

/* ---- the arena across host calls ------------------------------------------- */

static int arena_check(const uint8_t *req, uint32_t len, uint32_t size, wh_reply *out) {
    uint32_t req_sum = fnv(req, len);
    uint8_t *mine = wh_arena_alloc(size);
    if (mine == NULL) return fail_rc("arena alloc", WH_ERR_NOMEM);
    for (uint32_t i = 0; i < size; i++) mine[i] = (uint8_t)(i * 7 + 3);

    /* Host calls whose results the host writes into memory from a nested
     * wh_alloc: a value as large as `size`, read back, then smaller ones. */
    uint8_t *value = malloc(size ? size : 1);
    if (value == NULL) return fail_rc("malloc", WH_ERR_NOMEM);
    for (uint32_t i = 0; i < size; i++) value[i] = (uint8_t)(i * 13 + 1);
    int rc = wh_kv_set("arena", value, size, 0);
    if (rc != WH_OK) return fail_rc("kv.set", rc);
    const uint8_t *got;
    uint32_t got_len;
    if ((rc = wh_kv_get("arena", &got, &got_len)) != 1) return fail_rc("kv.get", rc < 0 ? rc : WH_ERR_NOT_FOUND);
    uint8_t rnd[64];
    if ((rc = wh_random_bytes(rnd, sizeof rnd)) != WH_OK) return fail_rc("random.bytes", rc);
    int64_t now = wh_time_monotonic_ns();
    if (now < 0) return fail_rc("time.monotonic", (int)now);
    int64_t count;
    if ((rc = wh_kv_incr("arena-calls", 1, &count)) != WH_OK) return fail_rc("kv.incr", rc);

    /* nothing was overwritten */
    if (fnv(req, len) != req_sum) { wh_fail("the payload was overwritten"); return 1; }
    for (uint32_t i = 0; i < size; i++)
        if (mine[i] != (uint8_t)(i * 7 + 3)) { wh_fail("an arena allocation was overwritten"); return 1; }
    if (got_len != size || (size && memcmp(got, value, size) != 0)) { wh_fail("the kv.get result was overwritten"); return 1; }
    if (size && !wh_arena_owns(got)) { wh_fail("the kv.get result is not in the arena"); return 1; }
    if (size && got < mine + size && mine < got + got_len) { wh_fail("the kv.get result overlaps my allocation"); return 1; }
    if (len && size && req < mine + size && mine < req + len) { wh_fail("my allocation overlaps the payload"); return 1; }
    free(value);

    /* reply: "<count> <arena used> <arena capacity>" */
    char *text = wh_arena_alloc(80), *t = text;
    if (text == NULL) return WH_ERR_NOMEM;
    t += wh_fmt_i64(t, count); *t++ = ' ';
    t += wh_fmt_i64(t, wh_arena_used()); *t++ = ' ';
    t += wh_fmt_i64(t, wh_arena_capacity());
    wh_reply_ref(out, text, (uint32_t)(t - text));
    return 0;
}

/* ---- dispatch --------------------------------------------------------------- */

int handle(const uint8_t *req, uint32_t len, wh_reply *out) {
    const char *s = (const char *)req, *arg;
    uint32_t al;
    int rc;
    int64_t n;

    if (starts(s, len, "arena", &arg, &al)) {
        if (wh_parse_i64(arg, al, &n) != WH_OK || n < 0) return fail_rc("arena size", WH_ERR_ARG);
        return arena_check(req, len, (uint32_t)n, out);
    }
    if (starts(s, len, "init", &arg, &al)) return reply_int(out, init_status);
    if (starts(s, len, "fail", &arg, &al)) {
        wh_fail_bytes(arg, al);
        wh_reply_str(out, "this reply is discarded");
        return 0; /* fail wins whatever the handler returns */
    }
    if (starts(s, len, "failrc", &arg, &al)) return 7;
    if (starts(s, len, "log", &arg, &al)) {
        char *lvl = word(&arg, &al);
        wh_log_bytes(atoi(lvl), arg, al);
        return wh_reply_str(out, "logged");
    }
    if (starts(s, len, "logf", &arg, &al)) {
        wh_logf(WH_LOG_INFO, "formatted %d %s %.*s", 42, "text", (int)al, arg);
        return wh_reply_str(out, "logged");
    }
    if (starts(s, len, "loghost", &arg, &al)) {
        char *lvl = word(&arg, &al);
        if ((rc = wh_log_host(atoi(lvl), wh_arena_strndup(arg, al))) != WH_OK) return fail_rc("log", rc);
        return wh_reply_str(out, "logged");
    }
    if (starts(s, len, "kvset", &arg, &al)) { /* kvset <key> <ttl> <value> */
        char *key = word(&arg, &al), *ttl = word(&arg, &al);
        if ((rc = wh_kv_set(key, arg, al, atof(ttl))) != WH_OK) return fail_rc("kv.set", rc);
        return wh_reply_str(out, "set");
    }
    if (starts(s, len, "kvget", &arg, &al)) {
        const uint8_t *v;
        uint32_t vl;
        rc = wh_kv_get(wh_arena_strndup(arg, al), &v, &vl);
        if (rc < 0) return fail_rc("kv.get", rc);
        if (rc == 0) return wh_reply_str(out, "<absent>");
        wh_reply_ref(out, v, vl);
        return 0;
    }
    if (starts(s, len, "kvdel", &arg, &al)) {
        rc = wh_kv_delete(wh_arena_strndup(arg, al));
        if (rc < 0) return fail_rc("kv.delete", rc);
        return reply_int(out, rc);
    }
    if (starts(s, len, "incr", &arg, &al)) { /* incr <key> <by> */
        char *key = word(&arg, &al);
        int64_t by, v;
        if (wh_parse_i64(arg, al, &by) != WH_OK) return fail_rc("incr by", WH_ERR_ARG);
        if ((rc = wh_kv_incr(key, by, &v)) != WH_OK) return fail_rc("kv.incr", rc);
        return reply_int(out, v);
    }
    if (starts(s, len, "time", &arg, &al)) {
        int64_t wall = wh_time_wall_ns(), mono = wh_time_monotonic_ns();
        if (wall < 0 || mono < 0) return fail_rc("time", (int)(wall < 0 ? wall : mono));
        char *t = wh_arena_alloc(48), *p = t;
        p += wh_fmt_i64(p, wall); *p++ = ' ';
        p += wh_fmt_i64(p, mono);
        wh_reply_ref(out, t, (uint32_t)(p - t));
        return 0;
    }
    if (starts(s, len, "random", &arg, &al)) {
        if (wh_parse_i64(arg, al, &n) != WH_OK || n < 0) return fail_rc("random n", WH_ERR_ARG);
        uint8_t *buf = wh_arena_alloc((uint32_t)n);
        if (buf == NULL) return WH_ERR_NOMEM;
        if ((rc = wh_random_bytes(buf, (uint32_t)n)) != WH_OK) return fail_rc("random.bytes", rc);
        wh_reply_ref(out, buf, (uint32_t)n);
        return 0;
    }
    if (starts(s, len, "secret", &arg, &al)) { /* secret <cap> <name> */
        char *capw = word(&arg, &al);
        uint32_t cap = (uint32_t)atoi(capw);
        char *buf = wh_arena_alloc(cap);
        rc = wh_secret_get(wh_arena_strndup(arg, al), buf, cap);
        if (rc == WH_ERR_HOST) {
            /* reply "error <code>" so that the test can tell unknown_op apart */
            char *t = wh_arena_alloc(80), *p = t;
            memcpy(p, "error ", 6); p += 6;
            uint32_t cl = (uint32_t)strlen(wh_last_error_code());
            memcpy(p, wh_last_error_code(), cl); p += cl;
            wh_reply_ref(out, t, (uint32_t)(p - t));
            return 0;
        }
        if (rc < 0) return reply_int(out, rc);
        if (buf[rc] != '\0') { wh_fail("the secret is not NUL-terminated"); return 1; }
        wh_reply_ref(out, buf, (uint32_t)rc);
        return 0;
    }
    if (starts(s, len, "post", &arg, &al) || starts(s, len, "relay", &arg, &al)) {
        /* post <url> <body>: POST with headers, reply "<status> <x-echo header>\n<body>";
         * relay <url>: GET with relay, reply "<status> <body length>" */
        int relay = s[0] == 'r';
        char *url = word(&arg, &al);
        wh_header hs[2] = {{"X-Wasmhive", "c-sdk"}, {"Content-Type", "application/octet-stream"}};
        wh_fetch_request fr;
        memset(&fr, 0, sizeof fr);
        fr.url = url;
        if (relay) {
            fr.relay = 1;
        } else {
            fr.method = "POST";
            fr.headers = hs;
            fr.nheaders = 2;
            fr.body = arg;
            fr.body_len = al;
        }
        wh_fetch_response resp;
        rc = wh_fetch(&fr, &resp);
        if (rc == WH_ERR_HOST) {
            char *t = wh_arena_alloc(80), *p = t;
            memcpy(p, "error ", 6); p += 6;
            uint32_t cl = (uint32_t)strlen(wh_last_error_code());
            memcpy(p, wh_last_error_code(), cl); p += cl;
            wh_reply_ref(out, t, (uint32_t)(p - t));
            return 0;
        }
        if (rc != WH_OK) return fail_rc("fetch", rc);
        const char *echo = "";
        uint32_t el = 0;
        wh_fetch_header(&resp, "x-echo", &echo, &el);
        char *t = wh_arena_alloc(48 + el + resp.body_len), *p = t;
        p += wh_fmt_i64(p, resp.status); *p++ = ' ';
        if (relay) {
            p += wh_fmt_i64(p, resp.body_len);
        } else {
            memcpy(p, echo, el); p += el; *p++ = '\n';
            memcpy(p, resp.body, resp.body_len); p += resp.body_len;
        }
        wh_reply_ref(out, t, (uint32_t)(p - t));
        return 0;
    }
    if (starts(s, len, "unknownop", &arg, &al)) {
        wh_mp_writer w;
        wh_result r;
        wh_request_begin(&w, "no.such.op", 0);
        rc = wh_call_writer(&w, &r);
        char *t = wh_arena_alloc(600), *p = t;
        p += wh_fmt_i64(p, rc); *p++ = ' ';
        p += wh_fmt_i64(p, r.ok); *p++ = ' ';
        memcpy(p, r.code, r.code_len); p += r.code_len; *p++ = '|';
        uint32_t ml = (uint32_t)strlen(wh_last_error_message());
        memcpy(p, wh_last_error_message(), ml); p += ml;
        wh_reply_ref(out, t, (uint32_t)(p - t));
        return 0;
    }
    if (starts(s, len, "mp", &arg, &al)) { /* mp <msgpack>: re-encode it */
        wh_mp v = wh_mp_view(arg, al), next;
        if ((rc = wh_mp_skip(v, &next)) != WH_OK) return fail_rc("skip", rc);
        if (next.p != v.end) { wh_fail("trailing bytes"); return 1; }
        wh_mp_writer w;
        wh_mp_init(&w);
        if ((rc = copy_value(v, &w, 0)) != WH_OK) return fail_rc("copy", rc);
        if (w.err) return fail_rc("writer", w.err);
        wh_reply_ref(out, w.buf, w.len);
        return 0;
    }
    if (starts(s, len, "find", &arg, &al)) { /* find <key> <msgpack map>: the value, re-encoded */
        char *key = word(&arg, &al);
        wh_mp v;
        rc = wh_mp_map_find(wh_mp_view(arg, al), key, &v);
        if (rc < 0) return fail_rc("find", rc);
        if (rc == 0) return wh_reply_str(out, "<absent>");
        wh_mp_writer w;
        wh_mp_init(&w);
        if ((rc = copy_value(v, &w, 0)) != WH_OK) return fail_rc("copy", rc);
        wh_reply_ref(out, w.buf, w.len);
        return 0;
    }
    if (starts(s, len, "oom", &arg, &al)) { /* oom <bytes>: an allocation that cannot succeed */
        if (wh_parse_i64(arg, al, &n) != WH_OK || n < 0 || n > UINT32_MAX) return fail_rc("oom size", WH_ERR_ARG);
        void *p = wh_arena_alloc((uint32_t)n);
        return wh_reply_str(out, p == NULL ? "null" : "allocated");
    }
    if (starts(s, len, "pieces", &arg, &al)) { /* pieces <n>: build an n-byte reply from many allocations */
        if (wh_parse_i64(arg, al, &n) != WH_OK || n < 0) return fail_rc("pieces n", WH_ERR_ARG);
        uint8_t *reply = wh_arena_alloc((uint32_t)n);
        if (reply == NULL) return WH_ERR_NOMEM;
        for (uint32_t i = 0, k = 1; i < (uint32_t)n; k = k * 2 % 70001 + 1) {
            uint8_t *junk = wh_arena_alloc(k); /* interleaved allocations grow the arena */
            if (junk == NULL) return WH_ERR_NOMEM;
            memset(junk, 0xee, k);
            uint32_t m = k < (uint32_t)n - i ? k : (uint32_t)n - i;
            for (uint32_t j = 0; j < m; j++) reply[i + j] = (uint8_t)((i + j) % 251);
            i += m;
        }
        wh_reply_ref(out, reply, (uint32_t)n);
        return 0;
    }
    if (starts(s, len, "stats", &arg, &al)) {
        char *t = wh_arena_alloc(48), *p = t;
        p += wh_fmt_i64(p, wh_arena_used()); *p++ = ' ';
        p += wh_fmt_i64(p, wh_arena_capacity());
        wh_reply_ref(out, t, (uint32_t)(p - t));
        return 0;
    }
    if (starts(s, len, "parse", &arg, &al)) {
        if ((rc = wh_parse_i64(arg, al, &n)) != WH_OK) return wh_reply_str(out, "invalid");
        return reply_int(out, n);
    }
    wh_fail("sdk_test: unknown command");
    return 1;
}
