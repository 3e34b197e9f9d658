/*
 * Raw response header blocks: ecw_headers_each(raw, len, fn, ud).
 *
 * Input: the header block exactly as curl hands it over (status line,
 * "Name: value" lines, CRLF or LF, possibly garbage).
 */
#include <stdlib.h>
#include <string.h>

#include "../csrc/http.h"
#include "fuzz.h"

struct walk {
  const char *raw, *end;
  const char *first_eol;     /* end of the status line */
  const char *last;          /* end of the previous value */
  size_t calls, lines;
};

static void on_header (void *ud, const char *name, size_t nlen,
                       const char *value, size_t vlen) {
  struct walk *w = ud;
  size_t i;
  w->calls++;
  CHECK("headers-calls", w->calls <= w->lines,
        "%zu callbacks for %zu lines", w->calls, w->lines);
  CHECK("headers-bounds",
        name >= w->raw && nlen <= (size_t)(w->end - name) &&
        value >= w->raw && vlen <= (size_t)(w->end - value),
        "name %p+%zu or value %p+%zu outside the block %p+%zu",
        (const void *)name, nlen, (const void *)value, vlen,
        (const void *)w->raw, (size_t)(w->end - w->raw));
  CHECK("headers-status-line", name > w->first_eol,
        "the status line was reported as header %s", fuzz_q(name, nlen));
  CHECK("headers-order", name >= w->last && value >= name + nlen,
        "header %s out of order", fuzz_q(name, nlen));
  w->last = value + vlen;
  CHECK("headers-name-empty", nlen > 0, "empty header name");
  for (i = 0; i < nlen; i++)
    CHECK("headers-name-bytes",
          name[i] != ':' && name[i] != '\r' && name[i] != '\n',
          "header name %s has ':', CR or LF", fuzz_q(name, nlen));
  for (i = 0; i < vlen; i++) {
    CHECK("headers-value-lf", value[i] != '\n',
          "header value %s has LF", fuzz_q(value, vlen));
    /* A bare CR would end a line if the value were ever written back. */
    CHECK("hardening-headers-value-cr", value[i] != '\r',
          "header value %s has CR", fuzz_q(value, vlen));
  }
  if (vlen > 0) {
    CHECK("headers-value-trim",
          value[0] != ' ' && value[0] != '\t' &&
          value[vlen - 1] != ' ' && value[vlen - 1] != '\t',
          "header value %s not trimmed", fuzz_q(value, vlen));
  }
  CHECK("headers-colon", name[nlen] == ':', "name %s not followed by ':'",
        fuzz_q(name, nlen + 1));
  /* RFC 9110 field names are tokens: obs-fold continuation lines (" x: y")
   * and names with spaces or controls are not headers. */
  for (i = 0; i < nlen; i++) {
    unsigned char c = (unsigned char)name[i];
    CHECK("hardening-headers-token",
          c > 0x20 && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c),
          "header name %s is not an RFC 9110 token", fuzz_q(name, nlen));
  }
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  struct walk w;
  char *raw = malloc(size ? size : 1);
  const char *nl;
  size_t i;
  memcpy(raw, data, size);
  memset(&w, 0, sizeof w);
  w.raw = w.last = raw;
  w.end = raw + size;
  nl = memchr(raw, '\n', size);
  w.first_eol = nl ? nl : w.end;
  for (i = 0; i < size; i++) w.lines += raw[i] == '\n';
  ecw_headers_each(raw, size, on_header, &w);
  if (nl == NULL) CHECK("headers-status-only", w.calls == 0,
                        "headers reported from a block with no line end");
  /* A response with no header bytes yet has raw == NULL, len == 0 (an
   * empty ecw_buf): a no-op, and no UB computing raw + len either. */
  if (!fuzz_skip("headers-null-block"))
    ecw_headers_each(NULL, 0, on_header, &w);
  free(raw);
  return 0;
}
