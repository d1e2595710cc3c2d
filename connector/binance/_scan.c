/* Binance market-data frames -> 64-byte records, in C.
 *
 * An optional speedup of connector/binance/batch.py (like websockets'
 * speedups.c): the pure-Python decoder in connector/binance/wire.py is the
 * reference, and this scanner must give exactly its records or decline.
 * It reads the four events Binance sends most (depthUpdate, trade, aggTrade,
 * bookTicker), bare or in the combined-stream envelope, in any key order.
 * Anything it is not sure about - escapes in strings, non-ASCII bytes,
 * floats, nulls in known fields, duplicate keys, numbers out of range,
 * decimals the exact parser might read differently, unknown symbols, other
 * events, malformed JSON - makes scan() return None, and the caller decodes
 * the frame with the reference decoder, which names the problem.
 *
 * Every read is bounds-checked against the frame's end; every write against
 * the capacity of the output buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The record layout of pipeline/record.py (checked at import by batch.py). */
#define RECORD_SIZE 64
#define OFF_SEQ 0
#define OFF_TS_EXCH 8
#define OFF_TS_RECV 16
#define OFF_INST 24
#define OFF_SRC 28
#define OFF_KIND 29
#define OFF_SIDE 30
#define OFF_FLAGS 31
#define OFF_PX 32
#define OFF_QTY 40
#define OFF_AUX 48
#define OFF_AUX2 56

enum { BOOK_LEVEL = 2, TRADE = 3, BBO = 4, BOOK_UPDATE = 11, EXTRA = 12 };
enum { SIDE_NONE = 0, SIDE_BID = 1, SIDE_ASK = 2, SIDE_BUY = 1, SIDE_SELL = 2 };
enum { FLAG_LAST = 1 };

#define MS_NS 1000000LL
#define MAX_MS (INT64_MAX / MS_NS) /* exclusive bound of a time in ms (wire.py _ms) */
#define SCALE 100000000LL
#define DECIMALS 8

typedef enum { T_NONE = 0, T_STR, T_INT, T_TRUE, T_FALSE, T_NULL, T_LEVELS } Type;

typedef struct {
    Type type;
    const char *start; /* strings: the contents; levels: the '[' */
    const char *end;   /* strings: the closing quote; levels: after the ']' */
    int64_t value;     /* ints */
    Py_ssize_t levels; /* level arrays: number of [px, qty] pairs */
    Py_ssize_t first;  /* level arrays: index of the first pair in the scratch buffer */
} Value;

/* Level values of the frame being scanned, as (px, qty) pairs: parsed while
 * scanning, so each byte is read once. Only used with the GIL held, by one
 * scan at a time (see scan()). */
static int64_t *scratch;
static Py_ssize_t scratch_pairs, scratch_used;
static int scanning;

static int scratch_push(int64_t px, int64_t qty) {
    if (scratch_used == scratch_pairs) {
        Py_ssize_t pairs = scratch_pairs ? 2 * scratch_pairs : 1024;
        int64_t *grown = PyMem_Realloc(scratch, (size_t)pairs * 2 * sizeof(int64_t));
        if (grown == NULL)
            return 0; /* declines; the reference decoder will do */
        scratch = grown;
        scratch_pairs = pairs;
    }
    scratch[2 * scratch_used] = px;
    scratch[2 * scratch_used + 1] = qty;
    scratch_used++;
    return 1;
}

/* The keys the four events use; everything else is ignored (as wire.py does). */
enum { K_e, K_E, K_T, K_s, K_U, K_u, K_pu, K_b, K_a, K_t, K_p, K_q, K_m, K_f, K_l, K_B, K_A, NKEYS };

typedef struct {
    Value v[NKEYS];
    int has_stream; /* top level only */
    int has_data;
    int data_is_object;
} Fields;

typedef struct {
    const char *p;
    const char *end;
} Scanner;

static inline void skip_ws(Scanner *sc) {
    while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
        sc->p++;
}

static inline int expect(Scanner *sc, char c) {
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == c) {
        sc->p++;
        return 1;
    }
    return 0;
}

/* A string of printable ASCII without escapes (else 0: decline). */
static int scan_string(Scanner *sc, const char **start, const char **end) {
    skip_ws(sc);
    if (sc->p >= sc->end || *sc->p != '"')
        return 0;
    const char *q = ++sc->p;
    while (q < sc->end) {
        unsigned char c = (unsigned char)*q;
        if (c == '"') {
            *start = sc->p;
            *end = q;
            sc->p = q + 1;
            return 1;
        }
        if (c == '\\' || c < 0x20 || c >= 0x7f)
            return 0;
        q++;
    }
    return 0;
}

/* A JSON integer (no leading zeros) that fits int64 (else 0: decline). */
static int scan_int(Scanner *sc, int64_t *out) {
    const char *q = sc->p;
    int negative = 0;
    if (q < sc->end && *q == '-') {
        negative = 1;
        q++;
    }
    if (q >= sc->end || *q < '0' || *q > '9')
        return 0;
    if (*q == '0' && q + 1 < sc->end && q[1] >= '0' && q[1] <= '9')
        return 0;
    uint64_t magnitude = 0;
    int digits = 0;
    while (q < sc->end && *q >= '0' && *q <= '9') {
        if (++digits > 19)
            return 0;
        magnitude = magnitude * 10 + (uint64_t)(*q - '0');
        q++;
    }
    /* A float (or anything glued on) is not an int. */
    if (q < sc->end && (*q == '.' || *q == 'e' || *q == 'E'))
        return 0;
    if (negative ? magnitude > (uint64_t)INT64_MAX + 1 : magnitude > (uint64_t)INT64_MAX)
        return 0;
    *out = negative ? (int64_t)(0 - magnitude) : (int64_t)magnitude;
    sc->p = q;
    return 1;
}

static int scan_literal(Scanner *sc, const char *word, size_t n) {
    if ((size_t)(sc->end - sc->p) >= n && memcmp(sc->p, word, n) == 0) {
        sc->p += n;
        return 1;
    }
    return 0;
}

/* Exactly what pipeline/fixedpoint.parse gives, for the plain shape only:
 * digits, optionally a point and 1 to 8 digits; the result fits int64.
 * Reads from s up to e at most; returns where the number ends, or NULL to
 * decline (signs, exponents, 9+ decimals, overflow, no digits). */
static const char *parse_plain(const char *s, const char *e, int64_t *out) {
    const char *q = s;
    uint64_t whole = 0;
    int int_digits = 0;
    while (q < e && *q >= '0' && *q <= '9') {
        if (int_digits > 0 || *q != '0') /* leading zeros do not count */
            if (++int_digits > 11)
                return NULL;
        whole = whole * 10 + (uint64_t)(*q - '0');
        q++;
    }
    if (q == s)
        return NULL;
    uint64_t frac = 0;
    int frac_digits = 0;
    if (q < e && *q == '.') {
        q++;
        while (q < e && *q >= '0' && *q <= '9') {
            if (++frac_digits > DECIMALS)
                return NULL;
            frac = frac * 10 + (uint64_t)(*q - '0');
            q++;
        }
        if (frac_digits == 0)
            return NULL;
    }
    static const uint64_t pow10[DECIMALS + 1] = {100000000, 10000000, 1000000, 100000, 10000,
                                                 1000,      100,      10,      1};
    frac *= pow10[frac_digits];
    if (whole > (uint64_t)INT64_MAX / SCALE)
        return NULL;
    uint64_t magnitude = whole * SCALE;
    if (magnitude > (uint64_t)INT64_MAX - frac)
        return NULL;
    *out = (int64_t)(magnitude + frac);
    return q;
}

static int parse_decimal(const char *s, const char *e, int64_t *out) {
    return parse_plain(s, e, out) == e;
}

enum { BAD = 0, MORE, CLOSED };

/* After an element or member: MORE after a ',', CLOSED after the closing
 * bracket (both consumed), BAD for anything else. */
static inline int after_item(Scanner *sc, char close) {
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == ',') {
        sc->p++;
        return MORE;
    }
    if (sc->p < sc->end && *sc->p == close) {
        sc->p++;
        return CLOSED;
    }
    return BAD;
}

/* A quoted plain decimal (see parse_decimal) read in place. */
static int scan_decimal(Scanner *sc, int64_t *out) {
    skip_ws(sc);
    if (sc->p >= sc->end || *sc->p != '"')
        return 0;
    const char *q = parse_plain(sc->p + 1, sc->end, out);
    if (q == NULL || q >= sc->end || *q != '"')
        return 0;
    sc->p = q + 1;
    return 1;
}

/* A level array: [] or [["px", "qty"], ...] of plain decimals, into the scratch buffer. */
static int scan_levels(Scanner *sc, Value *v) {
    v->start = sc->p; /* at '[' */
    sc->p++;
    v->levels = 0;
    v->first = scratch_used;
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == ']') {
        sc->p++;
        v->end = sc->p;
        return 1;
    }
    for (;;) {
        int64_t px, qty;
        if (!expect(sc, '[') || !scan_decimal(sc, &px) || !expect(sc, ',') ||
            !scan_decimal(sc, &qty) || !expect(sc, ']') || !scratch_push(px, qty))
            return 0;
        v->levels++;
        int next = after_item(sc, ']');
        if (next != MORE) {
            v->end = sc->p;
            return next == CLOSED;
        }
    }
}

static int key_index(const char *k, Py_ssize_t n) {
    if (n == 1) {
        switch (k[0]) {
        case 'e': return K_e;
        case 'E': return K_E;
        case 'T': return K_T;
        case 's': return K_s;
        case 'U': return K_U;
        case 'u': return K_u;
        case 'b': return K_b;
        case 'a': return K_a;
        case 't': return K_t;
        case 'p': return K_p;
        case 'q': return K_q;
        case 'm': return K_m;
        case 'f': return K_f;
        case 'l': return K_l;
        case 'B': return K_B;
        case 'A': return K_A;
        }
        return -1;
    }
    if (n == 2 && k[0] == 'p' && k[1] == 'u')
        return K_pu;
    return -1;
}

/* One value into v (NULL: an ignored key; only simple values are allowed). */
static int scan_value(Scanner *sc, Value *v, int levels_allowed) {
    Value ignored;
    if (v == NULL)
        v = &ignored;
    skip_ws(sc);
    if (sc->p >= sc->end)
        return 0;
    switch (*sc->p) {
    case '"':
        v->type = T_STR;
        return scan_string(sc, &v->start, &v->end);
    case 't':
        v->type = T_TRUE;
        return scan_literal(sc, "true", 4);
    case 'f':
        v->type = T_FALSE;
        return scan_literal(sc, "false", 5);
    case 'n':
        v->type = T_NULL;
        return scan_literal(sc, "null", 4);
    case '[':
        if (!levels_allowed)
            return 0;
        v->type = T_LEVELS;
        return scan_levels(sc, v);
    default:
        v->type = T_INT;
        return scan_int(sc, &v->value);
    }
}

/* An object's members into f. At the top level (data != NULL) "data" may be
 * an object, parsed into data; "stream" and "data" are noted whatever they hold. */
static int scan_object(Scanner *sc, Fields *f, Fields *data) {
    if (!expect(sc, '{'))
        return 0;
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == '}') {
        sc->p++;
        return 1;
    }
    for (;;) {
        const char *k, *ke;
        if (!scan_string(sc, &k, &ke) || !expect(sc, ':'))
            return 0;
        Py_ssize_t n = ke - k;
        int index = key_index(k, n);
        if (data != NULL && n == 4 && memcmp(k, "data", 4) == 0) {
            if (f->has_data)
                return 0; /* duplicate */
            f->has_data = 1;
            skip_ws(sc);
            if (sc->p < sc->end && *sc->p == '{') {
                f->data_is_object = 1;
                if (!scan_object(sc, data, NULL))
                    return 0;
            } else if (!scan_value(sc, NULL, 0)) {
                return 0;
            }
        } else if (data != NULL && n == 6 && memcmp(k, "stream", 6) == 0) {
            if (f->has_stream)
                return 0;
            f->has_stream = 1;
            if (!scan_value(sc, NULL, 0))
                return 0;
        } else if (index >= 0) {
            if (f->v[index].type != T_NONE)
                return 0; /* duplicate: the reference keeps the last one */
            if (!scan_value(sc, &f->v[index], index == K_b || index == K_a))
                return 0;
        } else if (!scan_value(sc, NULL, 0)) {
            return 0;
        }
        int next = after_item(sc, '}');
        if (next != MORE)
            return next == CLOSED;
    }
}

static inline int is_str(const Value *v, const char *s, Py_ssize_t n) {
    return v->type == T_STR && v->end - v->start == n && memcmp(v->start, s, (size_t)n) == 0;
}

static inline int get_int(const Value *v, int64_t *out) {
    if (v->type != T_INT)
        return 0;
    *out = v->value;
    return 1;
}

/* A time in ms -> ns; absent -> 0 when optional. */
static inline int get_ms(const Value *v, int optional, int64_t *out) {
    if (v->type == T_NONE && optional) {
        *out = 0;
        return 1;
    }
    if (v->type != T_INT || v->value < 0 || v->value >= MAX_MS)
        return 0;
    *out = v->value * MS_NS;
    return 1;
}

static inline int get_dec(const Value *v, int64_t *out) {
    return v->type == T_STR && parse_decimal(v->start, v->end, out);
}

static inline void put(char *r, int64_t ts_exch, int64_t ts_recv, uint32_t inst, uint8_t kind,
                       uint8_t side, int64_t px, int64_t qty, int64_t aux, int64_t aux2) {
    memset(r, 0, RECORD_SIZE);
    memcpy(r + OFF_TS_EXCH, &ts_exch, 8);
    memcpy(r + OFF_TS_RECV, &ts_recv, 8);
    memcpy(r + OFF_INST, &inst, 4);
    r[OFF_KIND] = (char)kind;
    r[OFF_SIDE] = (char)side;
    memcpy(r + OFF_PX, &px, 8);
    memcpy(r + OFF_QTY, &qty, 8);
    memcpy(r + OFF_AUX, &aux, 8);
    memcpy(r + OFF_AUX2, &aux2, 8);
}

/* The levels of one side into records. */
static void put_levels(const Value *v, uint8_t side, char *out, int64_t ts_exch, int64_t ts_recv,
                       uint32_t inst) {
    if (v->levels == 0)
        return; /* scratch may still be NULL, and NULL + 0 is undefined in C */
    const int64_t *pair = scratch + 2 * v->first;
    for (Py_ssize_t i = 0; i < v->levels; i++, pair += 2)
        put(out + i * RECORD_SIZE, ts_exch, ts_recv, inst, BOOK_LEVEL, side, pair[0], pair[1], 0, -1);
}

static PyObject *s_depth, *s_trade, *s_agg, *s_ticker;

/* scan(frame, out, offset, symbols, recv_ns) -> (event, symbol, n), n (no room) or None */
static PyObject *scan_frame(PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "scan(frame, out, offset, symbols, recv_ns)");
        return NULL;
    }
    PyObject *frame = args[0], *symbols = args[3];
    if (!PyBytes_Check(frame) || !PyDict_Check(symbols)) {
        PyErr_SetString(PyExc_TypeError, "scan: frame must be bytes and symbols a dict");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[2]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    int64_t ts_recv = PyLong_AsLongLong(args[4]);
    if (ts_recv == -1 && PyErr_Occurred())
        return NULL;

    Scanner sc = {PyBytes_AS_STRING(frame), PyBytes_AS_STRING(frame) + PyBytes_GET_SIZE(frame)};
    Fields top, data;
    scratch_used = 0;
    memset(&top, 0, sizeof top);
    memset(&data, 0, sizeof data);
    if (!scan_object(&sc, &top, &data))
        Py_RETURN_NONE;
    skip_ws(&sc);
    if (sc.p != sc.end)
        Py_RETURN_NONE;
    Fields *f = &top;
    if (top.has_stream && top.has_data) {
        if (!top.data_is_object)
            Py_RETURN_NONE;
        f = &data;
    } else if (top.has_data) {
        Py_RETURN_NONE; /* leave odd shapes to the reference */
    }
    Value *v = f->v;

    /* Which event (wire.py decode_event), and how many records. */
    PyObject *event;
    Py_ssize_t count;
    int extra = 0;
    if (is_str(&v[K_e], "depthUpdate", 11)) {
        if (v[K_b].type != T_LEVELS || v[K_a].type != T_LEVELS)
            Py_RETURN_NONE;
        event = s_depth;
        count = 1 + v[K_b].levels + v[K_a].levels;
    } else if (is_str(&v[K_e], "trade", 5)) {
        event = s_trade;
        extra = v[K_b].type != T_NONE && v[K_a].type != T_NONE;
        count = extra ? 2 : 1;
    } else if (is_str(&v[K_e], "aggTrade", 8)) {
        event = s_agg;
        extra = 1;
        count = 2;
    } else if (is_str(&v[K_e], "bookTicker", 10) ||
               ((v[K_e].type == T_NONE || v[K_e].type == T_NULL) && v[K_u].type != T_NONE &&
                v[K_b].type != T_NONE && v[K_A].type != T_NONE)) {
        event = s_ticker;
        count = 2;
    } else {
        Py_RETURN_NONE;
    }

    /* The instrument: a known symbol (the reference assigns or refuses others). */
    if (v[K_s].type != T_STR)
        Py_RETURN_NONE;
    PyObject *symbol = PyUnicode_FromStringAndSize(v[K_s].start, v[K_s].end - v[K_s].start);
    if (symbol == NULL)
        return NULL;
    PyObject *inst_obj = PyDict_GetItemWithError(symbols, symbol); /* borrowed */
    if (inst_obj == NULL || !PyLong_Check(inst_obj)) {
        Py_DECREF(symbol);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    long long inst_value = PyLong_AsLongLong(inst_obj);
    if (inst_value < 0 || inst_value > (long long)UINT32_MAX) {
        Py_DECREF(symbol);
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    uint32_t inst = (uint32_t)inst_value;

    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        Py_DECREF(symbol);
        return NULL;
    }
    int ok = 0;
    if (offset < 0 || view.len / RECORD_SIZE < offset) {
        PyBuffer_Release(&view);
        Py_DECREF(symbol);
        PyErr_SetString(PyExc_ValueError, "scan: offset outside the output buffer");
        return NULL;
    }
    if (view.len / RECORD_SIZE - offset < count) {
        /* No room: say how many records, the caller grows the buffer and asks again. */
        PyBuffer_Release(&view);
        Py_DECREF(symbol);
        return PyLong_FromSsize_t(count);
    }
    char *out = (char *)view.buf + offset * RECORD_SIZE;

    if (event == s_depth) {
        int64_t first, last, prev, e_ns, t_ns;
        if (!get_int(&v[K_U], &first) || !get_int(&v[K_u], &last) ||
            !get_ms(&v[K_E], 0, &e_ns) || !get_ms(&v[K_T], 1, &t_ns))
            goto done;
        if (v[K_pu].type == T_NONE)
            prev = -1;
        else if (!get_int(&v[K_pu], &prev))
            goto done;
        put(out, e_ns, ts_recv, inst, BOOK_UPDATE, SIDE_NONE, first, last, prev, t_ns);
        put_levels(&v[K_b], SIDE_BID, out + RECORD_SIZE, e_ns, ts_recv, inst);
        put_levels(&v[K_a], SIDE_ASK, out + (1 + v[K_b].levels) * RECORD_SIZE, e_ns, ts_recv,
                   inst);
    } else if (event == s_ticker) {
        int64_t u, e_ns, t_ns, bid, bid_qty, ask, ask_qty;
        if (!get_int(&v[K_u], &u) || !get_ms(&v[K_E], 1, &e_ns) || !get_ms(&v[K_T], 1, &t_ns) ||
            !get_dec(&v[K_b], &bid) || !get_dec(&v[K_B], &bid_qty) || !get_dec(&v[K_a], &ask) ||
            !get_dec(&v[K_A], &ask_qty))
            goto done;
        put(out, e_ns, ts_recv, inst, BBO, SIDE_BID, bid, bid_qty, u, t_ns);
        put(out + RECORD_SIZE, e_ns, ts_recv, inst, BBO, SIDE_ASK, ask, ask_qty, u, t_ns);
    } else {
        int agg = event == s_agg;
        int64_t id, e_ns, t_ns, px, qty, x_px = 0, x_qty = 0;
        if (v[K_m].type != T_TRUE && v[K_m].type != T_FALSE)
            goto done;
        if (!get_ms(&v[K_T], 0, &t_ns) || !get_dec(&v[K_p], &px) || !get_dec(&v[K_q], &qty) ||
            !get_int(&v[agg ? K_a : K_t], &id) || !get_ms(&v[K_E], 0, &e_ns))
            goto done;
        if (extra && (!get_int(&v[agg ? K_f : K_b], &x_px) || !get_int(&v[agg ? K_l : K_a], &x_qty)))
            goto done;
        uint8_t side = v[K_m].type == T_TRUE ? SIDE_SELL : SIDE_BUY;
        put(out, t_ns, ts_recv, inst, TRADE, side, px, qty, id, e_ns);
        if (extra)
            put(out + RECORD_SIZE, t_ns, ts_recv, inst, EXTRA, SIDE_NONE, x_px, x_qty, 0, 0);
    }
    out[(count - 1) * RECORD_SIZE + OFF_FLAGS] = FLAG_LAST;
    ok = 1;
done:
    PyBuffer_Release(&view);
    if (!ok) {
        Py_DECREF(symbol);
        Py_RETURN_NONE;
    }
    PyObject *result = Py_BuildValue("(OOn)", event, symbol, count);
    Py_DECREF(symbol);
    return result;
}

/* The symbol lookup can run Python code (a key's __eq__), which can call
 * scan() again, or let another thread do so, between scanning the levels into
 * scratch and writing them out: such a nested scan declines rather than
 * overwrite the outer one's levels. */
static PyObject *scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (scanning)
        Py_RETURN_NONE;
    scanning = 1;
    PyObject *result = scan_frame(args, nargs);
    scanning = 0;
    return result;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(frame, out, offset, symbols, recv_ns) -> (event, symbol, records), int or None\n\n"
     "Decode one frame into out[offset:] (a writable buffer of 64-byte records).\n"
     "An int: the records it needs when out has no room for them (nothing written).\n"
     "None: the reference decoder must take the frame."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan", "Binance frames -> records, in C (optional speedup).", -1,
    methods,      NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    s_depth = PyUnicode_InternFromString("depthUpdate");
    s_trade = PyUnicode_InternFromString("trade");
    s_agg = PyUnicode_InternFromString("aggTrade");
    s_ticker = PyUnicode_InternFromString("bookTicker");
    PyObject *layout = Py_BuildValue(
        "((si)(si)(si)(si)(si)(si)(si)(si)(si)(si)(si)(si))", "seq", OFF_SEQ, "ts_exch",
        OFF_TS_EXCH, "ts_recv", OFF_TS_RECV, "inst", OFF_INST, "src", OFF_SRC, "kind", OFF_KIND,
        "side", OFF_SIDE, "flags", OFF_FLAGS, "px", OFF_PX, "qty", OFF_QTY, "aux", OFF_AUX, "aux2",
        OFF_AUX2);
    if (!s_depth || !s_trade || !s_agg || !s_ticker || layout == NULL ||
        PyModule_AddObject(m, "LAYOUT", layout) < 0 ||
        PyModule_AddIntConstant(m, "RECORD_SIZE", RECORD_SIZE) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
