/* upper: a WASI command, not a wasmhive.h guest.  An ordinary C program with
 * main(): the payload is its stdin, what it writes to stdout reaches the caller
 * as stream chunks while it runs, stderr goes to the host's log, and a non-zero
 * exit status fails the call with GuestError (details["exit_code"]).
 *
 * It upper-cases ASCII letters chunk by chunk, flushing stdout after each chunk
 * so each one streams to the caller at once.  Input containing '!' fails the
 * call with exit status 7.
 *
 *     wasmhive build guest/c/examples/upper.c    (main() makes it a command)
 */
#include <stdio.h>
#include <string.h>

#define CHUNK 4096

int main(void) {
    static unsigned char buf[CHUNK];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        if (memchr(buf, '!', n) != NULL) {
            fputs("bad input\n", stderr);
            return 7;
        }
        for (size_t i = 0; i < n; i++) {
            if (buf[i] >= 'a' && buf[i] <= 'z') {
                buf[i] = (unsigned char)(buf[i] - 'a' + 'A');
            }
        }
        if (fwrite(buf, 1, n, stdout) != n || fflush(stdout) != 0) {
            fputs("upper: cannot write to stdout\n", stderr);
            return 1;
        }
        total += n;
    }
    if (ferror(stdin)) {
        fputs("upper: cannot read stdin\n", stderr);
        return 1;
    }
    fprintf(stderr, "upper: %zu bytes\n", total);
    return 0;
}
