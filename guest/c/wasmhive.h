/*
 * wasmhive.h - C guest SDK for wasmhive, guest ABI v1 (docs/abi.md).
 *
 * Single header, stb style.  Every file may include it for the declarations;
 * exactly ONE .c file of the guest defines the implementation (and with it
 * the exports wh_alloc and wh_handle):
 *
 *     #define WASMHIVE_IMPLEMENTATION
 *     #include "wasmhive.h"
 *
 *     int handle(const uint8_t *req, uint32_t len, wh_reply *out) {
 *         wh_reply_ref(out, req, len);          // echo
 *         return 0;
 *     }
 *
 * Build it as a WASI reactor with `wasmhive build guest.c` (pip install
 * ziglang; see guest/c/README.md), which runs:
 *
 *     python -m ziglang cc -target wasm32-wasi -O2 -s -mexec-model=reactor \
 *         -Wl,-z,stack-size=1048576 -I <this header's directory> -o guest.wasm guest.c
 *
 * The stack size matters: zig's default is 16 MiB, which every instance
 * would start with.
 *
 * The handler
 * -----------
 * The guest defines `int handle(const uint8_t *req, uint32_t len, wh_reply *out)`
 * (define WH_HANDLER to another name before including to rename it).  `req`
 * is the payload, valid until the handler returns.  Set the reply with
 * wh_reply_ref / wh_reply_copy / wh_reply_str (an untouched reply is empty).
 * Return 0 for success.  A non-zero return fails the call with GuestError: with
 * the message given to wh_fail() if the handler called it, else with
 * "handler returned <n>".
 *
 * Memory: the per-call arena
 * --------------------------
 * The exported wh_alloc hands out memory from an arena (blocks obtained with
 * malloc).  The arena is reset when the host allocates the payload, that is
 * at the start of each call, and never while a call or a host call is in
 * progress: the payload, host-call results (which the host writes into memory
 * it gets from a nested wh_alloc) and whatever the guest takes with
 * wh_arena_alloc all stay valid until the handler has returned.  Everything
 * the SDK returns by pointer (kv values, fetch bodies, msgpack views,
 * wh_arena_* memory) lives in the arena: copy it (malloc) to keep it across
 * calls.  After a call, the arena keeps one block as large as the whole
 * previous call needed, so steady-state calls do not touch malloc.  malloc and
 * free remain available for memory that must outlive a call.
 *
 * Make host calls through wh_call and the wrappers below, not through
 * wh_raw_host_call: wh_call tells wh_alloc that a host call is in progress,
 * which matters in wh_init (outside any call), where a bare host call would
 * look like the start of a new call and reset the arena.
 *
 * Optional setup: export your own `WH_EXPORT("wh_init") void init(void)`; the
 * host calls it once per instance, after the C constructors.  Host calls work
 * there; emit and fail do not (no call is in progress).
 *
 * Errors
 * ------
 * Functions returning int use 0 (or a documented non-negative value) for
 * success and a negative WH_ERR_* code for failure.  When the host answered a
 * host call with ok=false, the code is WH_ERR_HOST and wh_last_error_code() /
 * wh_last_error_message() give the host's error code ("unknown_op",
 * "bad_request", "not_granted", ...) and message.
 */
#ifndef WASMHIVE_H
#define WASMHIVE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WH_ABI_VERSION 1

#define WH_EXPORT(name) __attribute__((export_name(name)))
#define WH_IMPORT(name) __attribute__((import_module("wasmhive"), import_name(name)))

/* ---- raw imports (ABI v1 section 6) ---------------------------------------- */

WH_IMPORT("emit") void wh_raw_emit(const void *ptr, uint32_t len);
WH_IMPORT("fail") void wh_raw_fail(const void *ptr, uint32_t len);
WH_IMPORT("log") void wh_raw_log(int32_t level, const void *ptr, uint32_t len);
WH_IMPORT("host_call") uint64_t wh_raw_host_call(const void *ptr, uint32_t len);

/* ---- error codes ----------------------------------------------------------- */

enum {
    WH_OK = 0,
    WH_ERR_HOST = -1,      /* the host answered ok=false; see wh_last_error_code() */
    WH_ERR_NOMEM = -2,     /* the arena could not grow */
    WH_ERR_DECODE = -3,    /* the host's result is not what ABI v1 describes */
    WH_ERR_TYPE = -4,      /* a value has an unexpected msgpack type */
    WH_ERR_TOOSMALL = -5,  /* the caller's buffer is too small */
    WH_ERR_ARG = -6,       /* a bad argument (NULL where a value is needed, ...) */
    WH_ERR_NOT_FOUND = -7  /* a value is absent (nil) */
};

/* A short English name of a WH_ERR_* code. */
const char *wh_strerror(int err);
/* The host's error code / message of the last host call answered ok=false
 * ("" if none yet).  NUL-terminated, truncated to 63 / 511 bytes. */
const char *wh_last_error_code(void);
const char *wh_last_error_message(void);

/* ---- the call -------------------------------------------------------------- */

typedef struct {
    const uint8_t *data; /* must stay valid until the handler returns */
    uint32_t len;
} wh_reply;

#ifndef WH_HANDLER
#define WH_HANDLER handle
#endif
/* Defined by the guest: handle one message. */
int WH_HANDLER(const uint8_t *req, uint32_t len, wh_reply *out);

/* Reply with `data` as is (static data, the request, or arena memory). */
void wh_reply_ref(wh_reply *out, const void *data, uint32_t len);
/* Reply with a copy of `data` (in the arena).  WH_ERR_NOMEM on failure. */
int wh_reply_copy(wh_reply *out, const void *data, uint32_t len);
/* Reply with a copy of the C string `s` (without the NUL). */
int wh_reply_str(wh_reply *out, const char *s);

/* Send [ptr, ptr+len) to the caller as one stream chunk (copied at once). */
void wh_emit(const void *ptr, uint32_t len);
void wh_emit_str(const char *s);
/* Record an application error: the call fails with GuestError(msg) when the
 * handler returns, whatever it returns (the first message wins). */
void wh_fail(const char *msg);
void wh_fail_bytes(const void *msg, uint32_t len);
/* Log a line on the host (logger "wasmhive.guest"); at most 8192 bytes are read. */
enum { WH_LOG_TRACE = 0, WH_LOG_DEBUG = 1, WH_LOG_INFO = 2, WH_LOG_WARN = 3, WH_LOG_ERROR = 4 };
void wh_log(int level, const char *msg);
void wh_log_bytes(int level, const void *msg, uint32_t len);
/* printf-style log (uses vsnprintf from libc, linked only if you call it). */
void wh_logf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the arena ------------------------------------------------------------- */

/* `size` bytes, 16-byte aligned, valid until the next call starts.  NULL when
 * out of memory.  Never NULL for size 0. */
void *wh_arena_alloc(uint32_t size);
void *wh_arena_dup(const void *data, uint32_t len);
char *wh_arena_strndup(const char *s, uint32_t len); /* NUL-terminated copy */
/* Bytes handed out since the arena was last reset, and bytes the arena holds. */
uint32_t wh_arena_used(void);
uint32_t wh_arena_capacity(void);
/* Whether `ptr` points into memory the arena holds. */
int wh_arena_owns(const void *ptr);

/* ---- msgpack writer -------------------------------------------------------- */

/* Writes into an arena buffer that grows as needed.  After an allocation
 * failure `err` is set and later writes do nothing. */
typedef struct {
    uint8_t *buf;
    uint32_t len, cap;
    int err;
} wh_mp_writer;

void wh_mp_init(wh_mp_writer *w);
void wh_mp_map(wh_mp_writer *w, uint32_t n);   /* then n key/value pairs */
void wh_mp_array(wh_mp_writer *w, uint32_t n); /* then n values */
void wh_mp_str(wh_mp_writer *w, const char *s, uint32_t len);
void wh_mp_cstr(wh_mp_writer *w, const char *s);
void wh_mp_bin(wh_mp_writer *w, const void *data, uint32_t len);
void wh_mp_int(wh_mp_writer *w, int64_t v);   /* shortest encoding */
void wh_mp_uint(wh_mp_writer *w, uint64_t v); /* shortest encoding */
void wh_mp_float(wh_mp_writer *w, double v);  /* float 64 */
void wh_mp_bool(wh_mp_writer *w, int v);
void wh_mp_nil(wh_mp_writer *w);

/* ---- msgpack reader -------------------------------------------------------- */

/* A view of one encoded value: `p` is its first byte, `end` bounds the buffer. */
typedef struct {
    const uint8_t *p, *end;
} wh_mp;

enum {
    WH_MP_INVALID = 0, WH_MP_NIL, WH_MP_BOOL, WH_MP_INT, WH_MP_FLOAT,
    WH_MP_STR, WH_MP_BIN, WH_MP_ARRAY, WH_MP_MAP, WH_MP_EXT
};

wh_mp wh_mp_view(const void *data, uint32_t len);
int wh_mp_type(wh_mp v);
/* The view of the value after `v` (for walking sequences); WH_ERR_DECODE if `v`
 * is malformed or truncated. */
int wh_mp_skip(wh_mp v, wh_mp *next);
int wh_mp_is_nil(wh_mp v);
/* Read a value: 0, or WH_ERR_TYPE (another type) / WH_ERR_DECODE (malformed). */
int wh_mp_read_int(wh_mp v, int64_t *out); /* ints that fit int64 */
int wh_mp_read_bool(wh_mp v, int *out);
int wh_mp_read_float(wh_mp v, double *out); /* float 32/64, or an int */
int wh_mp_read_str(wh_mp v, const char **s, uint32_t *len); /* not NUL-terminated */
int wh_mp_read_bin(wh_mp v, const uint8_t **data, uint32_t *len);
int wh_mp_read_bytes(wh_mp v, const uint8_t **data, uint32_t *len); /* bin or str */
int wh_mp_map_size(wh_mp v, uint32_t *n);
int wh_mp_array_size(wh_mp v, uint32_t *n);
/* Find the value of string key `key` in map `map`: 1 found, 0 absent, or < 0. */
int wh_mp_map_find(wh_mp map, const char *key, wh_mp *value);

/* Iterate over a map's entries (or an array's items, `key` unused). */
typedef struct {
    wh_mp next;
    uint32_t left;
    int is_map;
} wh_mp_iter;
int wh_mp_iter_begin(wh_mp container, wh_mp_iter *it);
/* 1 with the next entry, 0 at the end, < 0 if malformed. */
int wh_mp_iter_next(wh_mp_iter *it, wh_mp *key, wh_mp *value);

/* Whether string value `v` equals the C string `s` (case-insensitive with _ci). */
int wh_mp_str_eq(wh_mp v, const char *s);
int wh_mp_str_eq_ci(wh_mp v, const char *s);

/* ---- host calls ------------------------------------------------------------ */

typedef struct {
    int ok;                   /* the host's `ok` */
    wh_mp value;              /* `value` (nil unless ok) */
    const char *code;         /* when !ok: error code, not NUL-terminated */
    uint32_t code_len;
    const char *message;      /* when !ok: error message, not NUL-terminated */
    uint32_t message_len;
    const uint8_t *raw;       /* the whole result (in the arena) */
    uint32_t raw_len;
} wh_result;

/* Send one msgpack request (a map with "op").  Returns WH_OK when the host
 * answered ok=true, WH_ERR_HOST when it answered ok=false (the error is in
 * `res` and in wh_last_error_*), WH_ERR_DECODE if the result is malformed. */
int wh_call(const void *req, uint32_t len, wh_result *res);
/* Start a request {"op": op, ...}: writes the map header for 1 + nfields
 * entries and the op; add nfields key/value pairs, then wh_call_writer. */
void wh_request_begin(wh_mp_writer *w, const char *op, uint32_t nfields);
int wh_call_writer(wh_mp_writer *w, wh_result *res);

/* kv (namespace: this function).  Values returned by pointer live in the arena. */
int wh_kv_get(const char *key, const uint8_t **value, uint32_t *len); /* 1 found, 0 absent */
int wh_kv_set(const char *key, const void *value, uint32_t len, double ttl); /* ttl <= 0: none */
int wh_kv_delete(const char *key); /* 1 if a live key was deleted, 0 if none */
int wh_kv_incr(const char *key, int64_t by, int64_t *out);
int wh_kv_incr_ttl(const char *key, int64_t by, double ttl, int64_t *out);

/* Clocks in nanoseconds; a negative WH_ERR_* on failure. */
int64_t wh_time_wall_ns(void);
int64_t wh_time_monotonic_ns(void);
/* Fill `buf` with `n` random bytes (any n; asks in pieces of 65536). */
int wh_random_bytes(void *buf, uint32_t n);
/* Logs through the "log" host call (like wh_log, without the import). */
int wh_log_host(int level, const char *msg);

/* Copy secret `name` into `buf` with a NUL.  Returns its length (without the
 * NUL), WH_ERR_TOOSMALL if it needs more than `cap` bytes (buf untouched), or
 * WH_ERR_HOST (e.g. code "not_granted"). */
int wh_secret_get(const char *name, char *buf, uint32_t cap);

typedef struct {
    const char *name, *value;
} wh_header;

typedef struct {
    const char *method;        /* NULL: "GET" */
    const char *url;
    const wh_header *headers;  /* nheaders entries, may be NULL */
    uint32_t nheaders;
    const void *body;          /* sent when body_len > 0 */
    uint32_t body_len;
    int relay;                 /* non-zero: the host streams the response body
                                  to the caller as chunks; `body` comes back empty */
} wh_fetch_request;

typedef struct {
    int status;
    wh_mp headers;             /* map str -> str; see wh_fetch_header */
    const uint8_t *body;       /* in the arena */
    uint32_t body_len;
} wh_fetch_response;

/* HTTP through the host ("http.fetch").  WH_OK with `resp` filled, or an
 * error (WH_ERR_HOST: wh_last_error_code() is e.g. "not_granted"). */
int wh_fetch(const wh_fetch_request *req, wh_fetch_response *resp);
/* GET `url`. */
int wh_fetch_get(const char *url, wh_fetch_response *resp);
/* A response header by name (case-insensitive): 1 found, 0 absent. */
int wh_fetch_header(const wh_fetch_response *resp, const char *name, const char **value, uint32_t *len);

/* ---- small text helpers ---------------------------------------------------- */

/* Decimal text of `v` into buf (at least 21 bytes), returns the length. */
uint32_t wh_fmt_i64(char *buf, int64_t v);
/* Parse an optionally signed decimal integer from [s, s+len), ignoring
 * surrounding ASCII whitespace.  0 on success, WH_ERR_ARG otherwise. */
int wh_parse_i64(const char *s, uint32_t len, int64_t *out);

#ifdef __cplusplus
}
#endif

#endif /* WASMHIVE_H */

/* ============================================================================
 * Implementation
 * ==========================================================================*/
#if defined(WASMHIVE_IMPLEMENTATION) && !defined(WASMHIVE_IMPLEMENTATION_DONE)
#define WASMHIVE_IMPLEMENTATION_DONE

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- arena ----------------------------------------------------------------- */

#ifndef WH_ARENA_MIN_BLOCK
#define WH_ARENA_MIN_BLOCK (64u * 1024u)
#endif
#define WH__ALIGN 16u

typedef struct wh__block {
    struct wh__block *next; /* older blocks */
    uint32_t size;          /* usable bytes after the header */
    uint32_t used;
    uint32_t pad[1];
} wh__block;

#define WH__HDR ((uint32_t)((sizeof(wh__block) + WH__ALIGN - 1) & ~(WH__ALIGN - 1)))

static wh__block *wh__arena;     /* current block; older ones follow ->next */
static uint32_t wh__arena_total; /* bytes handed out since the reset, over all blocks */
static int wh__in_call;          /* inside wh_handle */
static int wh__host_depth;       /* inside host_call (the host may call wh_alloc) */
static int wh__failed;           /* the handler called wh_fail in this call */
static uint8_t wh__empty[WH__ALIGN] __attribute__((aligned(16)));

static uint8_t *wh__block_data(wh__block *b) { return (uint8_t *)b + WH__HDR; }

static wh__block *wh__block_new(uint32_t size) {
    if (size > UINT32_MAX - WH__HDR - WH__ALIGN) return NULL;
    wh__block *b = (wh__block *)aligned_alloc(WH__ALIGN, (WH__HDR + size + WH__ALIGN - 1) & ~(WH__ALIGN - 1));
    if (b == NULL) return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

/* Start a new call: forget everything; keep (or make) one block that holds
 * what the last call needed, so the next one of its kind needs no malloc. */
static void wh__arena_reset(void) {
    wh__block *b = wh__arena;
    if (b != NULL && b->next != NULL) {
        uint32_t need = 0;
        for (wh__block *x = b; x != NULL; x = x->next) {
            uint32_t s = x->size;
            need = (need > UINT32_MAX - s) ? UINT32_MAX : need + s;
        }
        while (b != NULL) {
            wh__block *next = b->next;
            free(b);
            b = next;
        }
        wh__arena = wh__block_new(need); /* may be NULL: the next alloc retries */
    } else if (b != NULL) {
        b->used = 0;
    }
    wh__arena_total = 0;
}

void *wh_arena_alloc(uint32_t size) {
    if (size == 0) return wh__empty;
    if (size > UINT32_MAX - WH__ALIGN) return NULL;
    uint32_t rounded = (size + WH__ALIGN - 1) & ~(WH__ALIGN - 1);
    wh__block *b = wh__arena;
    if (b == NULL || b->size - b->used < rounded) {
        /* A new block: at least the request, at least the minimum, and twice
         * the current block so that growth stays geometric; fall back to the
         * exact size if memory is tight. */
        uint32_t want = rounded;
        if (want < WH_ARENA_MIN_BLOCK) want = WH_ARENA_MIN_BLOCK;
        if (b != NULL && b->size <= UINT32_MAX / 2 && want < 2 * b->size) want = 2 * b->size;
        wh__block *nb = wh__block_new(want);
        if (nb == NULL && want != rounded) nb = wh__block_new(rounded);
        if (nb == NULL) return NULL;
        nb->next = b;
        wh__arena = b = nb;
    }
    uint8_t *p = wh__block_data(b) + b->used;
    b->used += rounded;
    wh__arena_total = (wh__arena_total > UINT32_MAX - rounded) ? UINT32_MAX : wh__arena_total + rounded;
    return p;
}

void *wh_arena_dup(const void *data, uint32_t len) {
    void *p = wh_arena_alloc(len);
    if (p != NULL && len > 0) memcpy(p, data, len);
    return p;
}

char *wh_arena_strndup(const char *s, uint32_t len) {
    if (len == UINT32_MAX) return NULL;
    char *p = (char *)wh_arena_alloc(len + 1);
    if (p == NULL) return NULL;
    if (len > 0) memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

uint32_t wh_arena_used(void) { return wh__arena_total; }

uint32_t wh_arena_capacity(void) {
    uint32_t n = 0;
    for (wh__block *b = wh__arena; b != NULL; b = b->next) n += b->size;
    return n;
}

int wh_arena_owns(const void *ptr) {
    const uint8_t *p = (const uint8_t *)ptr;
    for (wh__block *b = wh__arena; b != NULL; b = b->next) {
        const uint8_t *d = wh__block_data(b);
        if (p >= d && p < d + b->size) return 1;
    }
    return 0;
}

/* ---- exports --------------------------------------------------------------- */

/* The host calls this for the payload (no call in progress: a new call
 * starts, the arena resets) and, from inside host_call, for results (the
 * arena keeps everything).  Returns NULL only when out of memory, which the
 * host reports as OutOfMemory. */
WH_EXPORT("wh_alloc") void *wh_alloc(uint32_t size) {
    if (!wh__in_call && wh__host_depth == 0) wh__arena_reset();
    return wh_arena_alloc(size);
}

static uint64_t wh__pack(const void *ptr, uint32_t len) {
    return ((uint64_t)(uintptr_t)ptr << 32) | (uint64_t)len;
}

WH_EXPORT("wh_handle") uint64_t wh_handle(uint8_t *ptr, uint32_t len) {
    wh_reply out = {NULL, 0};
    wh__in_call = 1;
    wh__failed = 0;
    int rc = WH_HANDLER(ptr, len, &out);
    if (rc != 0 && !wh__failed) {
        char msg[48];
        static const char prefix[] = "handler returned ";
        memcpy(msg, prefix, sizeof prefix - 1);
        uint32_t n = (uint32_t)(sizeof prefix - 1) + wh_fmt_i64(msg + sizeof prefix - 1, rc);
        wh_fail_bytes(msg, n);
    }
    /* The arena is not reset here: the host copies the reply after we return,
     * and the next payload allocation resets it. */
    wh__in_call = 0;
    wh__host_depth = 0;
    if (rc != 0 || out.len == 0 || out.data == NULL) return 0;
    return wh__pack(out.data, out.len);
}

/* ---- the call -------------------------------------------------------------- */

void wh_reply_ref(wh_reply *out, const void *data, uint32_t len) {
    out->data = (const uint8_t *)data;
    out->len = data != NULL ? len : 0;
}

int wh_reply_copy(wh_reply *out, const void *data, uint32_t len) {
    void *p = wh_arena_dup(data, len);
    if (p == NULL) return WH_ERR_NOMEM;
    wh_reply_ref(out, p, len);
    return WH_OK;
}

int wh_reply_str(wh_reply *out, const char *s) {
    return wh_reply_copy(out, s, s != NULL ? (uint32_t)strlen(s) : 0);
}

void wh_emit(const void *ptr, uint32_t len) { wh_raw_emit(len ? ptr : (const void *)wh__empty, len); }
void wh_emit_str(const char *s) { wh_emit(s, (uint32_t)strlen(s)); }

void wh_fail_bytes(const void *msg, uint32_t len) {
    wh__failed = 1;
    wh_raw_fail(len ? msg : (const void *)wh__empty, len);
}
void wh_fail(const char *msg) {
    if (msg == NULL) msg = "";
    wh_fail_bytes(msg, (uint32_t)strlen(msg));
}

void wh_log_bytes(int level, const void *msg, uint32_t len) {
    if (len > 8192) len = 8192;
    wh_raw_log(level, len ? msg : (const void *)wh__empty, len);
}
void wh_log(int level, const char *msg) {
    if (msg == NULL) msg = "";
    wh_log_bytes(level, msg, (uint32_t)strlen(msg));
}

void wh_logf(int level, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((uint32_t)n < sizeof small) {
        wh_log_bytes(level, small, (uint32_t)n);
        return;
    }
    uint32_t cap = (uint32_t)n + 1;
    if (cap > 8193) cap = 8193;
    char *big = (char *)wh_arena_alloc(cap);
    if (big == NULL) {
        wh_log_bytes(level, small, sizeof small - 1);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, cap, fmt, ap);
    va_end(ap);
    wh_log_bytes(level, big, cap - 1);
}

/* ---- errors ---------------------------------------------------------------- */

static char wh__err_code[64];
static char wh__err_message[512];

const char *wh_strerror(int err) {
    switch (err) {
    case WH_OK: return "ok";
    case WH_ERR_HOST: return "the host call failed";
    case WH_ERR_NOMEM: return "out of memory";
    case WH_ERR_DECODE: return "malformed msgpack";
    case WH_ERR_TYPE: return "unexpected msgpack type";
    case WH_ERR_TOOSMALL: return "buffer too small";
    case WH_ERR_ARG: return "bad argument";
    case WH_ERR_NOT_FOUND: return "not found";
    default: return "unknown error";
    }
}
const char *wh_last_error_code(void) { return wh__err_code; }
const char *wh_last_error_message(void) { return wh__err_message; }

static void wh__set_error(const char *code, uint32_t code_len, const char *msg, uint32_t msg_len) {
    if (code_len > sizeof wh__err_code - 1) code_len = sizeof wh__err_code - 1;
    if (msg_len > sizeof wh__err_message - 1) msg_len = sizeof wh__err_message - 1;
    if (code_len) memcpy(wh__err_code, code, code_len);
    wh__err_code[code_len] = '\0';
    if (msg_len) memcpy(wh__err_message, msg, msg_len);
    wh__err_message[msg_len] = '\0';
}

/* ---- msgpack writer -------------------------------------------------------- */

void wh_mp_init(wh_mp_writer *w) {
    w->buf = NULL;
    w->len = w->cap = 0;
    w->err = 0;
}

static uint8_t *wh__mp_reserve(wh_mp_writer *w, uint32_t n) {
    if (w->err) return NULL;
    if (n > UINT32_MAX - w->len) {
        w->err = WH_ERR_NOMEM;
        return NULL;
    }
    if (w->len + n > w->cap) {
        uint32_t cap = w->cap > 0 ? w->cap : 64;
        while (cap < w->len + n) cap = (cap > UINT32_MAX / 2) ? w->len + n : cap * 2;
        uint8_t *nb = (uint8_t *)wh_arena_alloc(cap);
        if (nb == NULL) {
            w->err = WH_ERR_NOMEM;
            return NULL;
        }
        if (w->len) memcpy(nb, w->buf, w->len);
        w->buf = nb;
        w->cap = cap;
    }
    uint8_t *p = w->buf + w->len;
    w->len += n;
    return p;
}

static void wh__be(uint8_t *p, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static void wh__mp_tag(wh_mp_writer *w, uint8_t tag, uint64_t v, int n) {
    uint8_t *p = wh__mp_reserve(w, 1 + (uint32_t)n);
    if (p == NULL) return;
    p[0] = tag;
    wh__be(p + 1, v, n);
}

static void wh__mp_container(wh_mp_writer *w, uint32_t n, uint8_t fix, uint8_t t16, uint8_t t32) {
    if (n < 16) wh__mp_tag(w, (uint8_t)(fix | n), 0, 0);
    else if (n <= 0xffff) wh__mp_tag(w, t16, n, 2);
    else wh__mp_tag(w, t32, n, 4);
}

void wh_mp_map(wh_mp_writer *w, uint32_t n) { wh__mp_container(w, n, 0x80, 0xde, 0xdf); }
void wh_mp_array(wh_mp_writer *w, uint32_t n) { wh__mp_container(w, n, 0x90, 0xdc, 0xdd); }

void wh_mp_str(wh_mp_writer *w, const char *s, uint32_t len) {
    if (len < 32) wh__mp_tag(w, (uint8_t)(0xa0 | len), 0, 0);
    else if (len <= 0xff) wh__mp_tag(w, 0xd9, len, 1);
    else if (len <= 0xffff) wh__mp_tag(w, 0xda, len, 2);
    else wh__mp_tag(w, 0xdb, len, 4);
    uint8_t *p = wh__mp_reserve(w, len);
    if (p != NULL && len) memcpy(p, s, len);
}

void wh_mp_cstr(wh_mp_writer *w, const char *s) {
    if (s == NULL) s = "";
    wh_mp_str(w, s, (uint32_t)strlen(s));
}

void wh_mp_bin(wh_mp_writer *w, const void *data, uint32_t len) {
    if (len <= 0xff) wh__mp_tag(w, 0xc4, len, 1);
    else if (len <= 0xffff) wh__mp_tag(w, 0xc5, len, 2);
    else wh__mp_tag(w, 0xc6, len, 4);
    uint8_t *p = wh__mp_reserve(w, len);
    if (p != NULL && len) memcpy(p, data, len);
}

void wh_mp_uint(wh_mp_writer *w, uint64_t v) {
    if (v <= 0x7f) wh__mp_tag(w, (uint8_t)v, 0, 0);
    else if (v <= 0xff) wh__mp_tag(w, 0xcc, v, 1);
    else if (v <= 0xffff) wh__mp_tag(w, 0xcd, v, 2);
    else if (v <= 0xffffffffu) wh__mp_tag(w, 0xce, v, 4);
    else wh__mp_tag(w, 0xcf, v, 8);
}

void wh_mp_int(wh_mp_writer *w, int64_t v) {
    if (v >= 0) wh_mp_uint(w, (uint64_t)v);
    else if (v >= -32) wh__mp_tag(w, (uint8_t)(0xe0 | (uint8_t)(v + 32)), 0, 0);
    else if (v >= INT8_MIN) wh__mp_tag(w, 0xd0, (uint64_t)v, 1);
    else if (v >= INT16_MIN) wh__mp_tag(w, 0xd1, (uint64_t)v, 2);
    else if (v >= INT32_MIN) wh__mp_tag(w, 0xd2, (uint64_t)v, 4);
    else wh__mp_tag(w, 0xd3, (uint64_t)v, 8);
}

void wh_mp_float(wh_mp_writer *w, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    wh__mp_tag(w, 0xcb, bits, 8);
}

void wh_mp_bool(wh_mp_writer *w, int v) { wh__mp_tag(w, v ? 0xc3 : 0xc2, 0, 0); }
void wh_mp_nil(wh_mp_writer *w) { wh__mp_tag(w, 0xc0, 0, 0); }

/* ---- msgpack reader -------------------------------------------------------- */

wh_mp wh_mp_view(const void *data, uint32_t len) {
    wh_mp v;
    v.p = (const uint8_t *)data;
    v.end = v.p + len;
    return v;
}

static uint64_t wh__rd(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

static int wh__avail(wh_mp v, uint32_t n) { return v.p <= v.end && (uint32_t)(v.end - v.p) >= n; }

int wh_mp_type(wh_mp v) {
    if (!wh__avail(v, 1)) return WH_MP_INVALID;
    uint8_t t = v.p[0];
    if (t <= 0x7f || t >= 0xe0) return WH_MP_INT;
    if (t <= 0x8f) return WH_MP_MAP;
    if (t <= 0x9f) return WH_MP_ARRAY;
    if (t <= 0xbf) return WH_MP_STR;
    switch (t) {
    case 0xc0: return WH_MP_NIL;
    case 0xc2: case 0xc3: return WH_MP_BOOL;
    case 0xc4: case 0xc5: case 0xc6: return WH_MP_BIN;
    case 0xc7: case 0xc8: case 0xc9: return WH_MP_EXT;
    case 0xca: case 0xcb: return WH_MP_FLOAT;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: return WH_MP_INT;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return WH_MP_EXT;
    case 0xd9: case 0xda: case 0xdb: return WH_MP_STR;
    case 0xdc: case 0xdd: return WH_MP_ARRAY;
    case 0xde: case 0xdf: return WH_MP_MAP;
    default: return WH_MP_INVALID; /* 0xc1 */
    }
}

/* Header of a value: how many header bytes, how many payload bytes follow,
 * and how many child values (maps count keys and values). */
static int wh__head(wh_mp v, uint32_t *hdr, uint32_t *body, uint64_t *children) {
    if (!wh__avail(v, 1)) return WH_ERR_DECODE;
    uint8_t t = v.p[0];
    uint32_t h = 1, n = 0;
    uint64_t c = 0;
    int lenbytes = 0; /* for variable-length types: size of the length field */
    int kind = 0;     /* 0 fixed, 1 bytes, 2 array, 3 map, 4 ext */
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
    } else if (t <= 0x8f) {
        c = 2u * (t & 0x0f);
    } else if (t <= 0x9f) {
        c = t & 0x0f;
    } else if (t <= 0xbf) {
        n = t & 0x1f;
    } else {
        switch (t) {
        case 0xc4: case 0xd9: lenbytes = 1; kind = 1; break;
        case 0xc5: case 0xda: lenbytes = 2; kind = 1; break;
        case 0xc6: case 0xdb: lenbytes = 4; kind = 1; break;
        case 0xc7: lenbytes = 1; kind = 4; break;
        case 0xc8: lenbytes = 2; kind = 4; break;
        case 0xc9: lenbytes = 4; kind = 4; break;
        case 0xca: n = 4; break;
        case 0xcb: n = 8; break;
        case 0xcc: case 0xd0: n = 1; break;
        case 0xcd: case 0xd1: n = 2; break;
        case 0xce: case 0xd2: n = 4; break;
        case 0xcf: case 0xd3: n = 8; break;
        case 0xd4: n = 2; break;
        case 0xd5: n = 3; break;
        case 0xd6: n = 5; break;
        case 0xd7: n = 9; break;
        case 0xd8: n = 17; break;
        case 0xdc: lenbytes = 2; kind = 2; break;
        case 0xdd: lenbytes = 4; kind = 2; break;
        case 0xde: lenbytes = 2; kind = 3; break;
        case 0xdf: lenbytes = 4; kind = 3; break;
        default: return WH_ERR_DECODE; /* 0xc1 */
        }
    }
    if (lenbytes) {
        if (!wh__avail(v, 1u + (uint32_t)lenbytes)) return WH_ERR_DECODE;
        uint32_t l = (uint32_t)wh__rd(v.p + 1, lenbytes);
        h += (uint32_t)lenbytes;
        if (kind == 1) n = l;
        else if (kind == 2) c = l;
        else if (kind == 3) c = 2ull * l;
        else { /* ext: type byte + data */
            if (l > UINT32_MAX - 1) return WH_ERR_DECODE;
            n = l + 1;
        }
    }
    if (!wh__avail(v, h) || (uint32_t)(v.end - v.p) - h < n) return WH_ERR_DECODE;
    *hdr = h;
    *body = n;
    *children = c;
    return WH_OK;
}

int wh_mp_skip(wh_mp v, wh_mp *next) {
    /* Iterative: `pending` counts values still to skip, so deep nesting
     * cannot exhaust the stack. */
    uint64_t pending = 1;
    while (pending > 0) {
        uint32_t h, n;
        uint64_t c;
        int rc = wh__head(v, &h, &n, &c);
        if (rc != WH_OK) return rc;
        v.p += h + n;
        pending = pending - 1 + c;
        /* each child needs at least one byte */
        if (pending > (uint64_t)(v.end - v.p)) return WH_ERR_DECODE;
    }
    *next = v;
    return WH_OK;
}

int wh_mp_is_nil(wh_mp v) { return wh__avail(v, 1) && v.p[0] == 0xc0; }

int wh_mp_read_int(wh_mp v, int64_t *out) {
    if (wh_mp_type(v) != WH_MP_INT) return wh__avail(v, 1) ? WH_ERR_TYPE : WH_ERR_DECODE;
    uint32_t h, n;
    uint64_t c;
    if (wh__head(v, &h, &n, &c) != WH_OK) return WH_ERR_DECODE;
    uint8_t t = v.p[0];
    if (t <= 0x7f) { *out = t; return WH_OK; }
    if (t >= 0xe0) { *out = (int64_t)(int8_t)t; return WH_OK; }
    uint64_t raw = wh__rd(v.p + 1, (int)n);
    switch (t) {
    case 0xcc: case 0xcd: case 0xce: *out = (int64_t)raw; return WH_OK;
    case 0xcf:
        if (raw > (uint64_t)INT64_MAX) return WH_ERR_TYPE;
        *out = (int64_t)raw;
        return WH_OK;
    case 0xd0: *out = (int8_t)raw; return WH_OK;
    case 0xd1: *out = (int16_t)raw; return WH_OK;
    case 0xd2: *out = (int32_t)raw; return WH_OK;
    default: *out = (int64_t)raw; return WH_OK; /* 0xd3 */
    }
}

int wh_mp_read_bool(wh_mp v, int *out) {
    if (!wh__avail(v, 1)) return WH_ERR_DECODE;
    if (v.p[0] == 0xc3) { *out = 1; return WH_OK; }
    if (v.p[0] == 0xc2) { *out = 0; return WH_OK; }
    return WH_ERR_TYPE;
}

int wh_mp_read_float(wh_mp v, double *out) {
    int t = wh_mp_type(v);
    if (t == WH_MP_INT) {
        int64_t i;
        int rc = wh_mp_read_int(v, &i);
        if (rc == WH_OK) *out = (double)i;
        return rc;
    }
    if (t != WH_MP_FLOAT) return t == WH_MP_INVALID ? WH_ERR_DECODE : WH_ERR_TYPE;
    uint32_t h, n;
    uint64_t c;
    if (wh__head(v, &h, &n, &c) != WH_OK) return WH_ERR_DECODE;
    uint64_t raw = wh__rd(v.p + 1, (int)n);
    if (n == 4) {
        uint32_t b = (uint32_t)raw;
        float f;
        memcpy(&f, &b, sizeof f);
        *out = f;
    } else {
        memcpy(out, &raw, sizeof raw);
    }
    return WH_OK;
}

static int wh__read_raw(wh_mp v, int want, const uint8_t **data, uint32_t *len) {
    int t = wh_mp_type(v);
    if (t == WH_MP_INVALID) return WH_ERR_DECODE;
    if (!(t == want || (want == -1 && (t == WH_MP_STR || t == WH_MP_BIN)))) return WH_ERR_TYPE;
    uint32_t h, n;
    uint64_t c;
    if (wh__head(v, &h, &n, &c) != WH_OK) return WH_ERR_DECODE;
    *data = v.p + h;
    *len = n;
    return WH_OK;
}

int wh_mp_read_str(wh_mp v, const char **s, uint32_t *len) {
    return wh__read_raw(v, WH_MP_STR, (const uint8_t **)s, len);
}
int wh_mp_read_bin(wh_mp v, const uint8_t **data, uint32_t *len) { return wh__read_raw(v, WH_MP_BIN, data, len); }
int wh_mp_read_bytes(wh_mp v, const uint8_t **data, uint32_t *len) { return wh__read_raw(v, -1, data, len); }

static int wh__size(wh_mp v, int want, uint32_t *n) {
    int t = wh_mp_type(v);
    if (t == WH_MP_INVALID) return WH_ERR_DECODE;
    if (t != want) return WH_ERR_TYPE;
    uint32_t h, b;
    uint64_t c;
    if (wh__head(v, &h, &b, &c) != WH_OK) return WH_ERR_DECODE;
    *n = (uint32_t)(want == WH_MP_MAP ? c / 2 : c);
    return WH_OK;
}
int wh_mp_map_size(wh_mp v, uint32_t *n) { return wh__size(v, WH_MP_MAP, n); }
int wh_mp_array_size(wh_mp v, uint32_t *n) { return wh__size(v, WH_MP_ARRAY, n); }

int wh_mp_iter_begin(wh_mp container, wh_mp_iter *it) {
    int t = wh_mp_type(container);
    if (t == WH_MP_INVALID) return WH_ERR_DECODE;
    if (t != WH_MP_MAP && t != WH_MP_ARRAY) return WH_ERR_TYPE;
    uint32_t h, b;
    uint64_t c;
    if (wh__head(container, &h, &b, &c) != WH_OK) return WH_ERR_DECODE;
    it->is_map = (t == WH_MP_MAP);
    it->left = (uint32_t)(it->is_map ? c / 2 : c);
    it->next.p = container.p + h;
    it->next.end = container.end;
    return WH_OK;
}

int wh_mp_iter_next(wh_mp_iter *it, wh_mp *key, wh_mp *value) {
    if (it->left == 0) return 0;
    wh_mp k = it->next, after;
    int rc;
    if (it->is_map) {
        if ((rc = wh_mp_skip(k, &after)) != WH_OK) return rc;
        wh_mp val = after;
        if ((rc = wh_mp_skip(val, &after)) != WH_OK) return rc;
        if (key) *key = k;
        if (value) *value = val;
    } else {
        if ((rc = wh_mp_skip(k, &after)) != WH_OK) return rc;
        if (value) *value = k;
    }
    it->next = after;
    it->left--;
    return 1;
}

static int wh__lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static int wh__str_eq(wh_mp v, const char *s, int ci) {
    const char *p;
    uint32_t n;
    if (wh_mp_read_str(v, &p, &n) != WH_OK) return 0;
    size_t sl = strlen(s);
    if (sl != n) return 0;
    for (uint32_t i = 0; i < n; i++) {
        int a = (unsigned char)p[i], b = (unsigned char)s[i];
        if (ci ? wh__lower(a) != wh__lower(b) : a != b) return 0;
    }
    return 1;
}
int wh_mp_str_eq(wh_mp v, const char *s) { return wh__str_eq(v, s, 0); }
int wh_mp_str_eq_ci(wh_mp v, const char *s) { return wh__str_eq(v, s, 1); }

int wh_mp_map_find(wh_mp map, const char *key, wh_mp *value) {
    wh_mp_iter it;
    int rc = wh_mp_iter_begin(map, &it);
    if (rc != WH_OK) return rc;
    if (!it.is_map) return WH_ERR_TYPE;
    wh_mp k, v;
    while ((rc = wh_mp_iter_next(&it, &k, &v)) == 1) {
        if (wh_mp_str_eq(k, key)) {
            *value = v;
            return 1;
        }
    }
    return rc; /* 0 absent, < 0 malformed */
}

/* ---- host calls ------------------------------------------------------------ */

int wh_call(const void *req, uint32_t len, wh_result *res) {
    memset(res, 0, sizeof *res);
    res->value = wh_mp_view(wh__empty, 0);
    /* While the host runs the request it calls wh_alloc for the result: keep
     * the arena (this also protects host calls made from wh_init). */
    wh__host_depth++;
    uint64_t loc = wh_raw_host_call(req, len);
    wh__host_depth--;
    const uint8_t *p = (const uint8_t *)(uintptr_t)(uint32_t)(loc >> 32);
    uint32_t n = (uint32_t)loc;
    res->raw = p;
    res->raw_len = n;
    wh_mp map = wh_mp_view(p, n), v;
    if (wh_mp_type(map) != WH_MP_MAP) return WH_ERR_DECODE;
    if (wh_mp_map_find(map, "ok", &v) != 1 || wh_mp_read_bool(v, &res->ok) != WH_OK) return WH_ERR_DECODE;
    if (wh_mp_map_find(map, "value", &v) == 1) res->value = v;
    if (res->ok) return WH_OK;
    wh_mp err, f;
    const char *s;
    uint32_t sl;
    if (wh_mp_map_find(map, "error", &err) == 1 && wh_mp_type(err) == WH_MP_MAP) {
        if (wh_mp_map_find(err, "code", &f) == 1 && wh_mp_read_str(f, &s, &sl) == WH_OK) {
            res->code = s;
            res->code_len = sl;
        }
        if (wh_mp_map_find(err, "message", &f) == 1 && wh_mp_read_str(f, &s, &sl) == WH_OK) {
            res->message = s;
            res->message_len = sl;
        }
    }
    if (res->code == NULL) {
        res->code = "unknown";
        res->code_len = 7;
    }
    wh__set_error(res->code, res->code_len, res->message ? res->message : "", res->message_len);
    return WH_ERR_HOST;
}

void wh_request_begin(wh_mp_writer *w, const char *op, uint32_t nfields) {
    wh_mp_init(w);
    wh_mp_map(w, nfields + 1);
    wh_mp_str(w, "op", 2);
    wh_mp_cstr(w, op);
}

int wh_call_writer(wh_mp_writer *w, wh_result *res) {
    if (w->err) {
        memset(res, 0, sizeof *res);
        return w->err;
    }
    return wh_call(w->buf, w->len, res);
}

static int wh__call_key(const char *op, const char *key, wh_result *res) {
    wh_mp_writer w;
    wh_request_begin(&w, op, 1);
    wh_mp_str(&w, "key", 3);
    wh_mp_cstr(&w, key);
    return wh_call_writer(&w, res);
}

int wh_kv_get(const char *key, const uint8_t **value, uint32_t *len) {
    wh_result r;
    int rc = wh__call_key("kv.get", key, &r);
    if (rc != WH_OK) return rc;
    if (wh_mp_is_nil(r.value)) {
        if (value) *value = NULL;
        if (len) *len = 0;
        return 0;
    }
    const uint8_t *d;
    uint32_t n;
    if ((rc = wh_mp_read_bin(r.value, &d, &n)) != WH_OK) return rc;
    if (value) *value = d;
    if (len) *len = n;
    return 1;
}

int wh_kv_set(const char *key, const void *value, uint32_t len, double ttl) {
    wh_mp_writer w;
    int has_ttl = ttl > 0;
    wh_request_begin(&w, "kv.set", 2u + (uint32_t)has_ttl);
    wh_mp_str(&w, "key", 3);
    wh_mp_cstr(&w, key);
    wh_mp_str(&w, "value", 5);
    wh_mp_bin(&w, value, value ? len : 0);
    if (has_ttl) {
        wh_mp_str(&w, "ttl", 3);
        wh_mp_float(&w, ttl);
    }
    wh_result r;
    return wh_call_writer(&w, &r);
}

int wh_kv_delete(const char *key) {
    wh_result r;
    int rc = wh__call_key("kv.delete", key, &r), existed = 0;
    if (rc != WH_OK) return rc;
    if ((rc = wh_mp_read_bool(r.value, &existed)) != WH_OK) return rc;
    return existed ? 1 : 0;
}

int wh_kv_incr_ttl(const char *key, int64_t by, double ttl, int64_t *out) {
    wh_mp_writer w;
    int has_ttl = ttl > 0;
    wh_request_begin(&w, "kv.incr", 2u + (uint32_t)has_ttl);
    wh_mp_str(&w, "key", 3);
    wh_mp_cstr(&w, key);
    wh_mp_str(&w, "by", 2);
    wh_mp_int(&w, by);
    if (has_ttl) {
        wh_mp_str(&w, "ttl", 3);
        wh_mp_float(&w, ttl);
    }
    wh_result r;
    int rc = wh_call_writer(&w, &r);
    if (rc != WH_OK) return rc;
    int64_t v;
    if ((rc = wh_mp_read_int(r.value, &v)) != WH_OK) return rc;
    if (out) *out = v;
    return WH_OK;
}

int wh_kv_incr(const char *key, int64_t by, int64_t *out) { return wh_kv_incr_ttl(key, by, 0, out); }

static int64_t wh__time(const char *op) {
    wh_mp_writer w;
    wh_request_begin(&w, op, 0);
    wh_result r;
    int rc = wh_call_writer(&w, &r);
    if (rc != WH_OK) return rc;
    int64_t v;
    if ((rc = wh_mp_read_int(r.value, &v)) != WH_OK) return rc;
    return v;
}
int64_t wh_time_wall_ns(void) { return wh__time("time.wall"); }
int64_t wh_time_monotonic_ns(void) { return wh__time("time.monotonic"); }

int wh_random_bytes(void *buf, uint32_t n) {
    uint8_t *out = (uint8_t *)buf;
    while (n > 0) {
        uint32_t k = n > 65536u ? 65536u : n;
        wh_mp_writer w;
        wh_request_begin(&w, "random.bytes", 1);
        wh_mp_str(&w, "n", 1);
        wh_mp_uint(&w, k);
        wh_result r;
        int rc = wh_call_writer(&w, &r);
        if (rc != WH_OK) return rc;
        const uint8_t *d;
        uint32_t got;
        if ((rc = wh_mp_read_bin(r.value, &d, &got)) != WH_OK) return rc;
        if (got != k) return WH_ERR_DECODE;
        memcpy(out, d, k);
        out += k;
        n -= k;
    }
    return WH_OK;
}

int wh_log_host(int level, const char *msg) {
    wh_mp_writer w;
    wh_request_begin(&w, "log", 2);
    wh_mp_str(&w, "level", 5);
    wh_mp_int(&w, level);
    wh_mp_str(&w, "message", 7);
    wh_mp_cstr(&w, msg);
    wh_result r;
    return wh_call_writer(&w, &r);
}

int wh_secret_get(const char *name, char *buf, uint32_t cap) {
    if (name == NULL) return WH_ERR_ARG;
    wh_mp_writer w;
    wh_request_begin(&w, "secret.get", 1);
    wh_mp_str(&w, "name", 4);
    wh_mp_cstr(&w, name);
    wh_result r;
    int rc = wh_call_writer(&w, &r);
    if (rc != WH_OK) return rc;
    if (wh_mp_is_nil(r.value)) return WH_ERR_NOT_FOUND;
    const uint8_t *d;
    uint32_t n;
    if ((rc = wh_mp_read_bytes(r.value, &d, &n)) != WH_OK) return rc;
    if (n > (uint32_t)INT32_MAX - 1) return WH_ERR_TOOSMALL;
    if (buf == NULL || cap < n + 1) return WH_ERR_TOOSMALL;
    if (n) memcpy(buf, d, n);
    buf[n] = '\0';
    return (int)n;
}

int wh_fetch(const wh_fetch_request *req, wh_fetch_response *resp) {
    if (req == NULL || resp == NULL || req->url == NULL) return WH_ERR_ARG;
    memset(resp, 0, sizeof *resp);
    uint32_t nfields = 2; /* method, url */
    if (req->nheaders > 0) nfields++;
    if (req->body_len > 0) nfields++;
    if (req->relay) nfields++;
    wh_mp_writer w;
    wh_request_begin(&w, "http.fetch", nfields);
    wh_mp_str(&w, "method", 6);
    wh_mp_cstr(&w, req->method != NULL ? req->method : "GET");
    wh_mp_str(&w, "url", 3);
    wh_mp_cstr(&w, req->url);
    if (req->nheaders > 0) {
        if (req->headers == NULL) return WH_ERR_ARG;
        wh_mp_str(&w, "headers", 7);
        wh_mp_map(&w, req->nheaders);
        for (uint32_t i = 0; i < req->nheaders; i++) {
            wh_mp_cstr(&w, req->headers[i].name);
            wh_mp_cstr(&w, req->headers[i].value);
        }
    }
    if (req->body_len > 0) {
        if (req->body == NULL) return WH_ERR_ARG;
        wh_mp_str(&w, "body", 4);
        wh_mp_bin(&w, req->body, req->body_len);
    }
    if (req->relay) {
        wh_mp_str(&w, "relay", 5);
        wh_mp_bool(&w, 1);
    }
    wh_result r;
    int rc = wh_call_writer(&w, &r);
    if (rc != WH_OK) return rc;
    wh_mp v;
    int64_t status;
    if (wh_mp_type(r.value) != WH_MP_MAP) return WH_ERR_DECODE;
    if (wh_mp_map_find(r.value, "status", &v) != 1 || wh_mp_read_int(v, &status) != WH_OK) return WH_ERR_DECODE;
    resp->status = (int)status;
    if (wh_mp_map_find(r.value, "headers", &v) == 1 && wh_mp_type(v) == WH_MP_MAP) resp->headers = v;
    else resp->headers = wh_mp_view("\x80", 1); /* empty map */
    if (wh_mp_map_find(r.value, "body", &v) == 1 && !wh_mp_is_nil(v)) {
        if ((rc = wh_mp_read_bytes(v, &resp->body, &resp->body_len)) != WH_OK) return rc;
    } else {
        resp->body = wh__empty;
        resp->body_len = 0;
    }
    return WH_OK;
}

int wh_fetch_get(const char *url, wh_fetch_response *resp) {
    wh_fetch_request req;
    memset(&req, 0, sizeof req);
    req.url = url;
    return wh_fetch(&req, resp);
}

int wh_fetch_header(const wh_fetch_response *resp, const char *name, const char **value, uint32_t *len) {
    wh_mp_iter it;
    if (wh_mp_iter_begin(resp->headers, &it) != WH_OK || !it.is_map) return 0;
    wh_mp k, v;
    while (wh_mp_iter_next(&it, &k, &v) == 1) {
        if (wh_mp_str_eq_ci(k, name)) {
            const uint8_t *d;
            uint32_t n;
            if (wh_mp_read_bytes(v, &d, &n) != WH_OK) return 0;
            if (value) *value = (const char *)d;
            if (len) *len = n;
            return 1;
        }
    }
    return 0;
}

/* ---- text helpers ---------------------------------------------------------- */

uint32_t wh_fmt_i64(char *buf, int64_t v) {
    char tmp[21];
    uint32_t k = 0, n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[k++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u > 0);
    if (v < 0) buf[n++] = '-';
    while (k > 0) buf[n++] = tmp[--k];
    return n;
}

int wh_parse_i64(const char *s, uint32_t len, int64_t *out) {
    uint32_t i = 0, end = len;
    while (i < end && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    while (end > i && (s[end - 1] == ' ' || s[end - 1] == '\t' || s[end - 1] == '\n' || s[end - 1] == '\r')) end--;
    int neg = 0;
    if (i < end && (s[i] == '-' || s[i] == '+')) neg = (s[i++] == '-');
    if (i == end) return WH_ERR_ARG;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < end; i++) {
        if (s[i] < '0' || s[i] > '9') return WH_ERR_ARG;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (limit - d) / 10) return WH_ERR_ARG;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return WH_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* WASMHIVE_IMPLEMENTATION */
