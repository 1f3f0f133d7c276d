# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
# cython: cdivision=False, embedsignature=False
"""The compiled hot path of the log scanner (``sipwatch.ingest.speedups`` decides whether it runs).

Three pieces, each a drop-in for a pure-Python reference that stays the definition of what
they do (differential Hypothesis properties, the ``compiled`` fuzz target and the whole suite,
run on both, hold them to it):

* ``finditer(buf)``: the records ``framing.RECORD_RE.finditer(buf)`` finds, as match-like
  objects with the same groups, found by one pass over the lines instead of the regex
  engine's backtracking walk;
* ``build_sip_message``: ``sip.build_sip_message`` with typed locals and the URI / branch /
  parameter scans as C loops (values with non-ASCII characters take the reference path: the
  reference's ``re.IGNORECASE`` and ``str.lower`` have Unicode rules a C loop would not copy);
* ``Framer``: ``framing.LogParser._frame_python``, the walk over a channel's records (held
  record, announced dump lengths, held-back text), as one C loop that builds each SIP message
  straight from the record's spans.

The scanner reads the str's own buffer (PEP 393 data, 1/2/4 bytes a character) through one
guarded accessor, ``at()``, which returns 0 outside ``[0, n)``: an index slip can never read
past the text.  The only unguarded reads are in loops bounded by ``n`` (commented); Python-level
indexing elsewhere is bounds-checked (``boundscheck=True``).  A text with a lone CR (``\\r`` not
before ``\\n``: the framer turns those into LFs before it scans, so only a direct caller sends
one) goes to the reference regex: the regex ends a record mid-line there, which a line
scanner would not copy.
"""

from cpython.unicode cimport (
    Py_UNICODE_ISDECIMAL,
    Py_UNICODE_ISSPACE,
    Py_UNICODE_TODECIMAL,
    PyUnicode_DATA,
    PyUnicode_KIND,
    PyUnicode_READ,
)
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.string cimport memchr

from sipwatch.ingest import sip as _sip

cdef Py_ssize_t MAX_GROUPS = 40
# header name (lower case) -> index in sip.HEADER_FIELDS
cdef dict _HEADER_NAMES = {
    "v": 1, "via": 1,
    "call-id": 2, "i": 3,
    "cseq": 4,
    "f": 5, "from": 5,
    "t": 6, "to": 6,
    "contact": 7, "m": 8,
    "expires": 9,
    "user-agent": 10,
    "authorization": 11,
    "proxy-authorization": 12,
    "x-reason": 13,
    "www-authenticate": 14,
    "proxy-authenticate": 15,
}
cdef Py_ssize_t _LONGEST_NAME = 19  # "proxy-authorization"
# _HEADER_NAMES as C arrays for the scanner (the bytes objects stay alive in _NAME_BYTES)
cdef list _NAME_BYTES = [name.encode("ascii") for name in _HEADER_NAMES]
cdef Py_ssize_t _N_NAMES = len(_NAME_BYTES)
cdef const char *_NAME_PTR[32]
cdef Py_ssize_t _NAME_LEN[32]
cdef int _NAME_FIELD[32]
if _N_NAMES > 32:
    raise ValueError("more header names than the scanner's table holds")
for _i, _name in enumerate(_HEADER_NAMES):
    _NAME_PTR[_i] = <bytes>_NAME_BYTES[_i]
    _NAME_LEN[_i] = len(_name)
    _NAME_FIELD[_i] = _HEADER_NAMES[_name]

cdef object _py_uri = _sip.parse_uri_user_host
cdef object _py_param = _sip._param
cdef object _py_int = _sip._int
cdef object _BRANCH_RE = _sip._BRANCH_RE
cdef Py_ssize_t MAX_FIELD = _sip.MAX_FIELD
cdef tuple _FIELDS = tuple(_sip.HEADER_FIELDS)


cdef class Layout:
    """Where each value goes in the groups of ``framing.RECORD_RE`` (built from its
    ``groupindex``, so the regex stays the one definition of the group numbers)."""

    cdef Py_ssize_t ngroups
    cdef Py_ssize_t header[16]  # HEADER_FIELDS order -> group number
    cdef Py_ssize_t line, pino
    cdef object regex

    def __init__(self, regex):
        cdef Py_ssize_t i
        self.regex = regex
        self.ngroups = regex.groups
        if self.ngroups + 1 > MAX_GROUPS or len(_FIELDS) != 16:
            raise ValueError("RECORD_RE has more groups than the compiled scanner knows")
        index = regex.groupindex
        for i in range(16):
            self.header[i] = index[_FIELDS[i]]
        self.line = index["line"]
        self.pino = index["pino"]


cdef class Record:
    """One record: what ``re.Match`` offers ``LogParser._frame`` and ``_record``."""

    cdef readonly str string
    cdef Py_ssize_t ngroups
    cdef Py_ssize_t spans[80]  # 2 * MAX_GROUPS: (start, end) of group g at 2g, -1 if absent

    def start(self, Py_ssize_t g=0):
        if g < 0 or g > self.ngroups:
            raise IndexError("no such group")
        return self.spans[2 * g]

    def end(self, Py_ssize_t g=0):
        if g < 0 or g > self.ngroups:
            raise IndexError("no such group")
        return self.spans[2 * g + 1]

    def span(self, Py_ssize_t g=0):
        return (self.start(g), self.end(g))

    def group(self, Py_ssize_t g=0):
        if g < 0 or g > self.ngroups:
            raise IndexError("no such group")
        if self.spans[2 * g] < 0:
            return None
        return self.string[self.spans[2 * g]:self.spans[2 * g + 1]]

    def groups(self, default=None):
        cdef Py_ssize_t g
        cdef object value
        cdef tuple out = PyTuple_New(self.ngroups)
        for g in range(1, self.ngroups + 1):
            if self.spans[2 * g] < 0:
                value = default
            else:
                value = self.string[self.spans[2 * g]:self.spans[2 * g + 1]]
            Py_INCREF(value)  # PyTuple_SET_ITEM steals a reference
            PyTuple_SET_ITEM(out, g - 1, value)
        return out


# A character code as a plain integer: Cython treats Py_UCS4 as a one-character string in
# arithmetic ("c + 32" would concatenate), so the scanner never uses it.
ctypedef unsigned int uchar


cdef struct Text:
    void *data  # the str's own buffer (PEP 393: 1, 2 or 4 bytes a character)
    int kind
    Py_ssize_t n


cdef inline Text _text(str s) noexcept:
    """The view of ``s`` the scanner reads through ``at()``."""
    cdef Text t
    t.data = PyUnicode_DATA(s)
    t.kind = PyUnicode_KIND(s)
    t.n = len(s)
    return t


cdef inline uchar at(const Text *t, Py_ssize_t i) noexcept:
    """``s[i]``, or 0 outside the text: no read ever leaves the string's buffer (every
    caller checks ``i < n`` itself; this is the guard that makes a slip harmless)."""
    if i < 0 or i >= t.n:
        return 0
    return PyUnicode_READ(t.kind, t.data, i)


cdef inline Py_ssize_t _find_nl(const Text *t, Py_ssize_t p) noexcept:
    """Index of the next "\n" at or after ``p``, or ``n``."""
    cdef const char *hit
    cdef Py_ssize_t i
    if p >= t.n:
        return t.n
    if p < 0:
        p = 0
    if t.kind == 1:
        hit = <const char *>memchr(<const char *>t.data + p, 10, <size_t>(t.n - p))
        return t.n if hit == NULL else hit - <const char *>t.data
    for i in range(p, t.n):
        if PyUnicode_READ(t.kind, t.data, i) == 10:
            return i
    return t.n


cdef inline bint _is_ascii_digit(uchar c) noexcept:
    return c >= 48 and c <= 57


cdef inline bint _is_digit(uchar c) noexcept:
    """The regex's ``\\d``: any Unicode decimal digit (ASCII ones without the table lookup)."""
    if c < 128:
        return _is_ascii_digit(c)
    return Py_UNICODE_ISDECIMAL(c)


cdef inline bint _is_alpha(uchar c) noexcept:
    return (c >= 97 and c <= 122) or (c >= 65 and c <= 90)


cdef inline bint _is_hex(uchar c) noexcept:
    return _is_ascii_digit(c) or (c >= 97 and c <= 102) or (c >= 65 and c <= 70)


# Templates: D a decimal digit (Unicode, as the regex's \d), L an ASCII letter, H a hex digit,
# any other character itself.
cdef const char *_STAMP = b"DDDD-DD-DD DD:DD:DD.DDDDDD "
cdef Py_ssize_t _STAMP_LEN = 27
cdef const char *_LEGACY = b"HHHHHHHH|DDDD-LLL-DD DD:DD:DD."
cdef Py_ssize_t _LEGACY_LEN = 30


cdef Py_ssize_t _template(const Text *t, Py_ssize_t p, const char *tmpl, Py_ssize_t m) noexcept:
    """Match ``tmpl`` at ``p``; the end position, or -1."""
    cdef Py_ssize_t i
    cdef char k
    cdef uchar c
    if p < 0 or p + m > t.n:
        return -1
    for i in range(m):
        k = tmpl[i]
        c = PyUnicode_READ(t.kind, t.data, p + i)  # p + i < p + m <= n
        if k == b'D':
            if not _is_digit(c):
                return -1
        elif k == b'L':
            if not _is_alpha(c):
                return -1
        elif k == b'H':
            if not _is_hex(c):
                return -1
        elif c != <uchar>k:
            return -1
    return p + m


cdef inline bint _literal(const Text *t, Py_ssize_t p, Py_ssize_t le, const char *lit, Py_ssize_t m) noexcept:
    """The ASCII ``lit`` (``m`` characters) at ``p``, before ``le``."""
    cdef Py_ssize_t i
    if p + m > le:
        return False
    for i in range(m):
        if at(t, p + i) != <uchar>lit[i]:
            return False
    return True


cdef Py_ssize_t _legacy_end(const Text *t, Py_ssize_t p) noexcept:
    """End of ``[0-9a-fA-F]{8}\|\d{4}-[A-Za-z]{3}-\d\d \d\d:\d\d:\d\d\.\d{1,9}\|`` at ``p``
    (after the closing ``|``), or -1."""
    cdef Py_ssize_t q = _template(t, p, _LEGACY, _LEGACY_LEN)
    cdef Py_ssize_t k = 0
    if q < 0:
        return -1
    while q + k < t.n and k < 10 and _is_digit(at(t, q + k)):
        k += 1
    if k < 1 or k > 9 or at(t, q + k) != 124 or q + k >= t.n:  # "|"
        return -1
    return q + k + 1


cdef inline Py_ssize_t _start_end(const Text *t, Py_ssize_t p) noexcept:
    """Where the record prefix at ``p`` ends, or -1 when ``framing._RECORD_START`` does not
    match there: the end of the drachtio stamp (``p + _STAMP_LEN``, which no legacy prefix is
    as short as) or of the legacy prefix; ``p`` itself for a pino line's ``{"``."""
    cdef uchar c
    cdef Py_ssize_t q
    if p >= t.n:
        return -1
    c = at(t, p)
    if c == 123:  # {"
        return p if p + 1 < t.n and at(t, p + 1) == 34 else -1
    if _is_digit(c):
        q = _template(t, p, _STAMP, _STAMP_LEN)
        if q >= 0:
            return q
    if _is_hex(c):
        return _legacy_end(t, p)
    return -1


cdef inline bint _record_start(const Text *t, Py_ssize_t p) noexcept:
    """``framing._RECORD_START`` matches at ``p``."""
    return _start_end(t, p) >= 0


cdef inline Py_ssize_t _value_end(const Text *t, Py_ssize_t p, Py_ssize_t le) noexcept:
    """End of ``[^\r\n]*`` from ``p`` on a line ending at ``le`` (no lone CR in the text)."""
    if le > p and at(t, le - 1) == 13:
        return le - 1
    return le


cdef bint _dump_header(const Text *t, Py_ssize_t q, Py_ssize_t le, Py_ssize_t *sp) noexcept:
    """``(recv|send) (\d+) bytes (?:from|to) ([A-Za-z]{2,5})/\[([^\]\n]{0,64})\]:(\d{1,5})``
    at ``q`` on the line ending at ``le``; fills the spans of groups 3-7 (sp[6..15])."""
    cdef Py_ssize_t p = q, k
    if not ((_literal(t, p, le, b"recv ", 5)) or _literal(t, p, le, b"send ", 5)):
        return False
    sp[6] = p
    sp[7] = p + 4
    p += 5
    k = p
    while p < le and _is_digit(at(t, p)):
        p += 1
    if p == k:
        return False
    sp[8] = k
    sp[9] = p
    if not _literal(t, p, le, b" bytes ", 7):
        return False
    p += 7
    if _literal(t, p, le, b"from ", 5):
        p += 5
    elif _literal(t, p, le, b"to ", 3):
        p += 3
    else:
        return False
    k = p
    while p < le and p - k < 6 and _is_alpha(at(t, p)):
        p += 1
    if p - k < 2 or p - k > 5 or not _literal(t, p, le, b"/[", 2):
        return False
    sp[10] = k
    sp[11] = p
    p += 2
    k = p
    while p < le and p - k <= 64 and at(t, p) != 93:  # "]"
        p += 1
    if p >= le or p - k > 64:  # no "]" within 64 characters on this line
        return False
    sp[12] = k
    sp[13] = p
    p += 1
    if p >= le or at(t, p) != 58:  # ":"
        return False
    p += 1
    k = p
    while p < le and p - k < 5 and _is_digit(at(t, p)):
        p += 1
    if p == k:
        return False
    sp[14] = k
    sp[15] = p
    return True


cdef inline bint _ieq(const Text *t, Py_ssize_t p, const char *name, Py_ssize_t m) noexcept:
    """The ``m`` characters at ``p`` are ``name`` (lower case ASCII letters and "-"), in any
    ASCII case: as the regex's ``[Vv][Ii][Aa]`` classes."""
    cdef Py_ssize_t i
    cdef uchar c
    for i in range(m):
        c = at(t, p + i)
        if c >= 65 and c <= 90:
            c += 32
        if c != <uchar>name[i]:
            return False
    return True


cdef int _name_field(const Text *t, Py_ssize_t p, Py_ssize_t m) noexcept:
    """Index in ``sip.HEADER_FIELDS`` of the header named by the ``m`` characters at ``p``
    (long and compact forms), or -1; the table is ``_HEADER_NAMES``."""
    cdef Py_ssize_t i
    cdef bytes name
    for i in range(_N_NAMES):
        if _NAME_LEN[i] == m and _ieq(t, p, _NAME_PTR[i], m):
            return _NAME_FIELD[i]
    return -1


cdef int _header_field(const Text *t, Py_ssize_t p, Py_ssize_t le, Py_ssize_t *vstart) noexcept:
    """Which ``HEADER_FIELDS`` entry the header line at ``p`` is (-1: none sipwatch reads);
    ``vstart`` gets where its value starts (``name[ \t]*:[ \t]*``)."""
    cdef Py_ssize_t k = p
    cdef uchar c
    while k < le and k - p <= _LONGEST_NAME:
        c = at(t, k)
        if not (_is_alpha(c) or c == 45):  # "-"
            break
        k += 1
    if k == p or k - p > _LONGEST_NAME:
        return -1
    # after the name: [ \t]* ":" - checked before the name is looked up (most lines fail)
    cdef Py_ssize_t j = k
    while j < le and (at(t, j) == 32 or at(t, j) == 9):
        j += 1
    if j >= le or at(t, j) != 58:
        return -1
    field = _name_field(t, p, k - p)
    if field < 0:
        return -1
    j += 1
    while j < le and (at(t, j) == 32 or at(t, j) == 9):
        j += 1
    vstart[0] = j
    return <int>field


cdef inline bint _ends_headers(const Text *t, Py_ssize_t ls) noexcept:
    """The guard of a header line: ``(?!record start)(?!\r?\n|\r?\Z)``."""
    cdef uchar c
    if ls >= t.n:
        return True
    c = at(t, ls)
    if c == 10:
        return True
    if c == 13 and (ls + 1 >= t.n or at(t, ls + 1) == 10):
        return True
    return _record_start(t, ls)


cdef Py_ssize_t _parse_record(
    Py_ssize_t *sp, Layout lay, const Text *t, Py_ssize_t st, Py_ssize_t q
) noexcept:
    """Fill ``sp`` with the group spans of the record starting at ``st``, whose prefix ends at
    ``q`` (``_start_end``); returns the end of the last line it read (no line it read starts
    a record; the rest of a record is plain lines up to the next start, which no group
    covers)."""
    cdef Py_ssize_t n = t.n
    cdef Py_ssize_t le = _find_nl(t, st)
    cdef Py_ssize_t cur, ls, lend, vs, ve, g
    cdef int field
    cdef bint first
    if at(t, st) == 123:  # {
        g = lay.pino
        sp[2 * g] = st
        sp[2 * g + 1] = le
        return le
    if q == st + _STAMP_LEN:
        sp[2] = st
        sp[3] = q - 1
    else:
        sp[4] = st + 9
        sp[5] = q - 1
        if q < le and at(t, q) == 32:
            q += 1
    if not _dump_header(t, q, le, sp):
        for g in range(6, 16):
            sp[g] = -1
        g = lay.line
        sp[2 * g] = q
        sp[2 * g + 1] = le
        return le
    # the start line: the next line, unless it starts a record (it may be empty)
    if le >= n or _record_start(t, le + 1):
        return le
    ls = le + 1
    lend = _find_nl(t, ls)
    sp[16] = ls
    sp[17] = _value_end(t, ls, lend)
    cur = lend
    first = True
    while cur < n:  # at(cur) == "\n"
        ls = cur + 1
        if _ends_headers(t, ls):
            break
        lend = _find_nl(t, ls)
        field = _header_field(t, ls, lend, &vs)
        if field >= 0:
            if field == 1 and first:
                field = 0  # the top Via: the first header line
            g = lay.header[field]
            ve = _value_end(t, vs, lend)
            sp[2 * g] = vs
            sp[2 * g + 1] = ve
        first = False
        cur = lend
    return cur


cdef bint _lone_cr(const Text *t) noexcept:
    cdef Py_ssize_t i
    cdef const char *hit
    if t.kind == 1:
        hit = <const char *>memchr(t.data, 13, <size_t>t.n)
        while hit != NULL:
            i = hit - <const char *>t.data
            if at(t, i + 1) != 10:
                return True
            if i + 2 >= t.n:
                return False
            hit = <const char *>memchr(<const char *>t.data + i + 2, 13, <size_t>(t.n - i - 2))
        return False
    for i in range(t.n):
        if PyUnicode_READ(t.kind, t.data, i) == 13 and at(t, i + 1) != 10:
            return True
    return False


cdef class Records:
    """The records of one text, one at a time (as ``re.finditer``: at most the record being
    looked at and the one ``_frame`` holds are alive, whatever the text's size)."""

    cdef Layout lay
    cdef str s
    cdef Text t
    cdef Py_ssize_t p  # the next line start to look at
    cdef Py_ssize_t q  # where the prefix of the record at p ends (-1: p not looked at yet)

    def __iter__(self):
        return self

    def __next__(self):
        cdef Record r = Record.__new__(Record)
        cdef Py_ssize_t p = _next_record(&self.t, self.p, self.lay, r.spans, &self.q)
        if p < 0:
            self.p = self.t.n
            raise StopIteration
        r.string = self.s
        r.ngroups = self.lay.ngroups
        self.p = p
        return r


cdef Py_ssize_t _next_record(
    const Text *t, Py_ssize_t p, Layout lay, Py_ssize_t *sp, Py_ssize_t *prefix_end
) noexcept:
    """Fill ``sp`` with the spans of the first record at or after the line start ``p``;
    returns where to look for the next one, or -1 when there is no record.

    ``prefix_end`` carries ``_start_end`` of the returned position to the next call (-1: not
    known, look), so each record's prefix is matched once, not again by the next call."""
    cdef Py_ssize_t i
    cdef Py_ssize_t q = prefix_end[0]
    if q < 0:
        while p < t.n:
            q = _start_end(t, p)
            if q >= 0:
                break
            p = _find_nl(t, p) + 1
    if p >= t.n:
        return -1
    for i in range(2 * (lay.ngroups + 1)):
        sp[i] = -1
    sp[0] = p
    p = _parse_record(sp, lay, t, p, q) + 1
    q = -1
    while p < t.n:  # the next record's start ends this one
        q = _start_end(t, p)
        if q >= 0:
            break
        p = _find_nl(t, p) + 1
    sp[1] = p - 1 if p < t.n else t.n
    prefix_end[0] = q
    return p


def count_lines(str s):
    """``s.count("\\n")``, by ``memchr`` for the usual 1-byte text (str.count goes through the
    general substring counter: five instructions a byte, a twentieth of a replay's)."""
    cdef Py_ssize_t n = len(s), lines = 0
    cdef const char *d
    cdef const char *end
    cdef const char *hit
    if PyUnicode_KIND(s) != 1:
        return s.count("\n")
    d = <const char *>PyUnicode_DATA(s)
    end = d + n
    hit = <const char *>memchr(d, 10, <size_t>n)
    while hit != NULL:
        lines += 1
        hit = <const char *>memchr(hit + 1, 10, <size_t>(end - hit - 1))
    return lines


def has_lone_cr(str s):
    """``"\\r" in s and s.count("\\r") != s.count("\\r\\n")``, in one pass."""
    cdef Text t = _text(s)
    return _lone_cr(&t)


def finditer(Layout lay, str s):
    """The records of ``s``, as the matches ``lay.regex.finditer(s)`` yields."""
    cdef Records it = Records.__new__(Records)
    it.lay = lay
    it.s = s
    it.t = _text(s)
    it.p = 0
    it.q = -1
    if _lone_cr(&it.t):
        return lay.regex.finditer(s)
    return it


# ---------------------------------------------------------------------- SIP message

cdef inline bint _uri_stop(uchar c) noexcept:
    return c == 64 or c == 62 or Py_UNICODE_ISSPACE(<Py_UCS4>c)  # "@" ">" or white space


cdef tuple _uri_user_host(str value):
    """``sip.parse_uri_user_host`` for an ASCII value: the same search, as one loop over the
    value's bytes (1 byte a character, as ``isascii()`` guarantees; every read is bounded by
    ``n``)."""
    cdef const unsigned char *d = <const unsigned char *>PyUnicode_DATA(value)
    cdef Py_ssize_t n = len(value), i, p = -1, h, k, u0 = -1, u1 = -1
    cdef uchar c
    cdef str user, host
    for i in range(n):
        c = d[i] | 0x20u  # ASCII lower case (exact for letters, all it is compared with)
        if c == 115 and i + 3 < n and d[i + 1] | 0x20u == 105 and d[i + 2] | 0x20u == 112:
            if d[i + 3] == 58:  # "sip:"
                p = i + 4
                break
            if d[i + 3] | 0x20u == 115 and i + 4 < n and d[i + 4] == 58:  # "sips:"
                p = i + 5
                break
        elif (c == 116 and i + 3 < n and d[i + 1] | 0x20u == 101
              and d[i + 2] | 0x20u == 108 and d[i + 3] == 58):  # "tel:"
            p = i + 4
            break
    if p < 0:
        return ("", "")
    # optional "user[:password]@"
    h = p
    k = p
    while k < n and not (_uri_stop(d[k]) or d[k] == 58):
        k += 1
    if k < n and d[k] == 64:
        u0, u1, h = p, k, k + 1
    elif k < n and d[k] == 58:
        i = k + 1
        while i < n and not _uri_stop(d[i]):
            i += 1
        if i < n and d[i] == 64:
            u0, u1, h = p, k, i + 1
    # host: "[...]" or up to ":;>?" or whitespace
    k = -1
    if h < n and d[h] == 91:  # "["
        k = value.find("]", h + 1)
    if k >= 0:
        host = value[h + 1:k]
    else:
        k = h
        while k < n:
            c = d[k]
            if c == 58 or c == 59 or c == 62 or c == 63 or Py_UNICODE_ISSPACE(<Py_UCS4>c):
                break
            k += 1
        host = value[h:k]
        if host[:1] == "[":
            host = host[1:len(host) - 1]  # "[" alone: "" (wraparound is off: no -1)
    user = value[u0:u1] if u0 >= 0 else ""
    host = host[:MAX_FIELD]
    return (user[:MAX_FIELD], host.lower() if _has_upper(host) else host)


cdef bint _has_upper(str ascii_text) noexcept:
    """An ASCII text has an upper-case letter (else ``lower()`` would only copy it)."""
    cdef const unsigned char *d = <const unsigned char *>PyUnicode_DATA(ascii_text)
    cdef Py_ssize_t i
    for i in range(len(ascii_text)):
        if 65 <= d[i] <= 90:
            return True
    return False


cdef inline tuple uri_user_host(str value):
    if value.isascii():
        return _uri_user_host(value)
    return _py_uri(value)


cdef Py_ssize_t _ifind(const Text *t, const char *name, Py_ssize_t m, Py_ssize_t pos) noexcept:
    """``value.lower().find(name, pos)`` of an ASCII value, without the lowered copy
    (``name`` is lower case)."""
    cdef Py_ssize_t i
    for i in range(pos, t.n - m + 1):
        if _ieq(t, i, name, m):
            return i
    return -1


cdef str _param_ascii(str value, str name):
    """``sip._param`` for an ASCII value (1 byte a character, as ``isascii()`` guarantees)."""
    cdef const unsigned char *d = <const unsigned char *>PyUnicode_DATA(value)
    cdef const char *nm = <const char *>PyUnicode_DATA(name)
    cdef Text t = _text(value)
    cdef Py_ssize_t pos = 0, i, j, end, n = len(value), m = len(name)
    cdef unsigned char c
    while True:
        i = _ifind(&t, nm, m, pos)
        if i < 0:
            return ""
        c = d[i - 1] if i > 0 else 32
        if i == 0 or c == 32 or c == 44 or c == 59 or c == 9:  # " " "," ";" "\t"
            j = i + m
            while j < n and (d[j] == 32 or d[j] == 9):
                j += 1
            if j < n and d[j] == 61:  # "="
                j += 1
                while j < n and (d[j] == 32 or d[j] == 9):
                    j += 1
                if j < n and d[j] == 34:  # '"'
                    end = value.find('"', j + 1)
                    return value[j + 1:end if end >= 0 else n][:MAX_FIELD]
                end = j
                while end < n:
                    c = d[end]
                    if c == 44 or c == 59 or c == 32 or c == 9 or c == 13:
                        break
                    end += 1
                return value[j:end][:MAX_FIELD]
        pos = i + m


cdef inline str param(str value, str name):
    if value.isascii():
        return _param_ascii(value, name)
    return _py_param(value, name)


cdef inline Py_ssize_t _skip_space(const Text *t, Py_ssize_t p) noexcept:
    """The first index at or after ``p`` that is not white space (``str.split``'s), or n."""
    while p < t.n and Py_UNICODE_ISSPACE(<Py_UCS4>at(t, p)):
        p += 1
    return p


cdef inline Py_ssize_t _skip_word(const Text *t, Py_ssize_t p) noexcept:
    """The first index at or after ``p`` that is white space, or n."""
    while p < t.n and not Py_UNICODE_ISSPACE(<Py_UCS4>at(t, p)):
        p += 1
    return p


cdef object _int(str text):
    """``sip._int``: what ``strip()`` leaves must be 1 to 11 ASCII digits, summed here
    instead of parsed by ``int()``."""
    cdef Text t = _text(text)
    cdef Py_ssize_t b = t.n
    while b > 0 and Py_UNICODE_ISSPACE(<Py_UCS4>at(&t, b - 1)):
        b -= 1
    return _int_span(&t, _skip_space(&t, 0), b)


cdef object _int_span(const Text *t, Py_ssize_t a, Py_ssize_t b):
    """``sip._int`` of ``text[a:b]`` that has no white space at either end."""
    cdef long long v = 0
    cdef Py_ssize_t i
    cdef uchar c
    if b <= a or b - a >= 12:
        return None
    for i in range(a, b):
        c = at(t, i)
        if not _is_ascii_digit(c):
            return None
        v = v * 10 + (c - 48)
    return v


cdef str _branch(str via):
    cdef Py_ssize_t b = via.find("branch="), k
    cdef Text t
    cdef uchar c
    if b < 0:
        bm = _BRANCH_RE.search(via)  # "Branch=", "BRANCH =" ...
        return bm.group(1) if bm is not None else ""
    b += 7
    k = b
    t = _text(via)
    while k < t.n:
        c = at(&t, k)
        if c == 59 or c == 44 or Py_UNICODE_ISSPACE(<Py_UCS4>c):  # ";" ","
            break
        k += 1
    return via[b:k]


cpdef object build_sip_message(
    double ts,
    str source,
    str what,
    Py_ssize_t size,
    str transport,
    str peer_ip,
    Py_ssize_t peer_port,
    str start,
    tuple headers,
):
    """``sip.build_sip_message``, compiled (the reference documents the rules); ``Framer``
    calls it from C, without the argument parsing."""
    cdef bint is_request
    cdef int status
    cdef str reason, method, request_uri
    cdef Py_ssize_t sp
    cdef Text st
    start = start.rstrip()
    if start.startswith("SIP/2.0 "):
        is_request = False
        # three ASCII digits at 8..10, then the end or " " (shorter: a status under 100)
        st = _text(start)
        if not (_is_ascii_digit(at(&st, 8)) and _is_ascii_digit(at(&st, 9))
                and _is_ascii_digit(at(&st, 10)) and (st.n == 11 or at(&st, 11) == 32)):
            return None
        status = (at(&st, 8) - 48) * 100 + (at(&st, 9) - 48) * 10 + (at(&st, 10) - 48)
        if not 100 <= status <= 699:
            return None
        reason = start[12:]
        method = ""
        request_uri = ""
    else:
        sp = start.find(" ")
        if sp <= 0 or not start.endswith("SIP/2.0"):
            return None
        is_request = True
        status = 0
        reason = ""
        method = start[:sp].upper()[:MAX_FIELD]
        request_uri = start[sp + 1:max(len(start) - 8, 0)].strip()[:MAX_FIELD]
    cdef str top_via, via, call_id, call_id_c, cseq, from_v, to_v, contact, contact_c
    cdef str expires, user_agent, authz, proxy_authz, x_reason, www_auth, proxy_authn
    (top_via, via, call_id, call_id_c, cseq, from_v, to_v, contact, contact_c, expires,
     user_agent, authz, proxy_authz, x_reason, www_auth, proxy_authn) = headers
    via = top_via or via
    call_id = (call_id or call_id_c).strip()
    contact = contact or contact_c
    authz = authz or proxy_authz
    www_auth = www_auth or proxy_authn

    cdef object cseq_num = 0
    cdef Text ct
    cdef Py_ssize_t w0, w1, m0, m1
    if cseq:  # cseq.split(): the number, then (a response's) method
        ct = _text(cseq)
        w0 = _skip_space(&ct, 0)
        if w0 < ct.n:
            w1 = _skip_word(&ct, w0)
            cseq_num = _int_span(&ct, w0, w1) or 0
            m0 = _skip_space(&ct, w1)
            if m0 < ct.n and not is_request:
                m1 = _skip_word(&ct, m0)
                method = cseq[m0:m1].upper()[:MAX_FIELD]
    cdef str branch = _branch(via) if via else ""
    cdef str to_user = "", to_host = ""
    if to_v:
        to_user, to_host = uri_user_host(to_v)
    cdef str from_user = "", from_host = "", auth_username = "", auth_realm = "", ce
    cdef bint has_auth = False
    cdef object exp = None
    if is_request:
        if from_v:
            from_user, from_host = uri_user_host(from_v)
        if expires:
            exp = _int(expires)
        if exp is None and contact:
            ce = param(contact, "expires")
            if ce:
                exp = _int(ce)
        if authz:
            has_auth = True
            auth_username = param(authz, "username")
            auth_realm = param(authz, "realm")
    elif expires:
        exp = _int(expires)

    return _SipMessage(
        ts,
        source,
        _RECV if what == "recv" else _SEND,
        transport,
        peer_ip,
        peer_port,
        size,
        is_request,
        method,
        status,
        reason[:MAX_FIELD],
        request_uri,
        call_id[:MAX_FIELD],
        cseq_num,
        branch[:MAX_FIELD],
        from_user,
        from_host,
        to_user,
        to_host,
        contact[:MAX_FIELD],
        exp,
        user_agent.strip()[:MAX_FIELD],
        auth_username,
        auth_realm,
        has_auth,
        x_reason.strip()[:MAX_FIELD],
        www_auth[:MAX_FIELD],
    )


cdef str _WHAT_RECV = "recv"
cdef str _WHAT_SEND = "send"
cdef object _SipMessage = _sip.SipMessage
cdef object _RECV = _sip._RECV
cdef object _SEND = _sip._SEND


# ---------------------------------------------------------------------- framing

cdef inline bint _blank(const Text *t, Py_ssize_t a, Py_ssize_t b) noexcept:
    """``s[a:b].strip() == ""`` (Unicode whitespace, as ``str.strip``)."""
    cdef Py_ssize_t i
    for i in range(a, b):
        if not Py_UNICODE_ISSPACE(at(t, i)):
            return False
    return True


cdef Py_ssize_t _digits_value(const Text *t, Py_ssize_t a, Py_ssize_t b, Py_ssize_t too_many) noexcept:
    """``int(s[a:b])`` of a run of decimal digits (any script, as ``int()``), or
    ``too_many`` when it has more than 18 (``framing.IMPOSSIBLE_SIZE``)."""
    cdef Py_ssize_t i, v = 0
    if b - a > 18:
        return too_many
    for i in range(a, b):
        v = v * 10 + Py_UNICODE_TODECIMAL(at(t, i))
    return v


cdef double _seconds(const Text *t, Py_ssize_t a) noexcept:
    """``float(s[a:a + 9])`` of a stamp's ``SS.ffffff`` (the scanner matched its digits).

    Exact: the value is the integer ``SSffffff`` over 10**6, both exact in a double, and one
    IEEE division is correctly rounded, as ``float()``'s parse of the decimal text is."""
    cdef Py_ssize_t micros = _digits_value(t, a, a + 2, 0) * 1000000 + _digits_value(t, a + 3, a + 9, 0)
    return <double>micros / 1e6


cdef tuple _TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss", "sctp")  # "udp" first: _UDP
cdef Py_ssize_t _UDP = 0
# as C strings for _ieq (the bytes objects stay alive in _TRANSPORT_BYTES)
cdef list _TRANSPORT_BYTES = [name.encode("ascii") for name in _TRANSPORTS]
cdef const char *_TRANSPORT_PTR[6]
for _i, _name in enumerate(_TRANSPORT_BYTES):
    _TRANSPORT_PTR[_i] = <bytes>_name


cdef Py_ssize_t _known_transport(const Text *t, Py_ssize_t a, Py_ssize_t b) noexcept:
    """Index in ``_TRANSPORTS`` of ``s[a:b].lower()`` (ASCII letters), or -1."""
    cdef Py_ssize_t k
    for k in range(len(_TRANSPORTS)):
        if len(<str>_TRANSPORTS[k]) == b - a and _ieq(t, a, _TRANSPORT_PTR[k], b - a):
            return k
    return -1


cdef str _transport(const Text *t, str buf, Py_ssize_t a, Py_ssize_t b):
    """``buf[a:b].lower()``, the known transports without a new string each time."""
    cdef Py_ssize_t k = _known_transport(t, a, b)
    return <str>_TRANSPORTS[k] if k >= 0 else buf[a:b].lower()


cdef Py_ssize_t _rfind_nl(const Text *t, Py_ssize_t a, Py_ssize_t b) noexcept:
    """``s.rfind("\\n", a, b)`` for ``0 <= a``."""
    cdef Py_ssize_t i
    if b > t.n:
        b = t.n
    i = b - 1
    while i >= a:
        if at(t, i) == 10:
            return i
        i -= 1
    return -1


cdef class Framer:
    """``LogParser._frame_python`` over the compiled scanner, as one C loop.

    The same walk record by record - held record, announced dump lengths, proven ends,
    "embedded" and "sip_length" counts, held-back text - with a SIP dump's message built
    straight from the spans (no match object, no groups tuple); every other record (pino,
    drachtio service lines, sofia debug) goes to the reference ``LogParser._record``.  A text
    with a lone CR goes to the reference as a whole (see ``finditer``).  The limits and the
    anomaly counter come from ``framing`` (``limits``, ``count_anomalies``), which stays their
    one definition; ``build`` replaces the compiled message builder (a test injects a failing
    one).
    """

    cdef Layout lay
    cdef object build, count_anomalies
    cdef Py_ssize_t slack, max_udp, max_stream, max_pending, too_many
    cdef str truncated

    def __init__(self, Layout lay, limits, count_anomalies, build=None):
        self.lay = lay
        self.build = build
        self.count_anomalies = count_anomalies  # framing's (the rare path: a Python call)
        self.slack = limits["dump_slack"]
        self.max_udp = limits["max_udp_dump"]
        self.max_stream = limits["max_stream_dump"]
        self.max_pending = limits["max_pending"]
        self.too_many = limits["impossible_size"]
        self.truncated = limits["truncated"]

    def __call__(self, parser, ch, str text, list out, bint final):
        cdef str pending = ch.pending
        cdef str buf = pending + text if pending else text
        cdef Text t
        cdef Py_ssize_t spans_a[80]
        cdef Py_ssize_t spans_b[80]
        cdef Py_ssize_t *cur = spans_a
        cdef Py_ssize_t *held = spans_b
        cdef Py_ssize_t *swap
        cdef bint has_held = False, impossible = False, udp
        cdef Py_ssize_t p = 0, start, pos, body, size, end, nl, g_line = self.lay.line
        cdef Py_ssize_t held_size = 0, region_end = 0, proven_end = 0, embedded = 0
        cdef Py_ssize_t ran_to_end = 1 + self.slack, pino = self.lay.pino
        cdef Py_ssize_t prefix_end = -1  # _next_record's
        cdef str source = ch.source
        if not buf:
            ch.pending = ""
            return
        t = _text(buf)
        if _lone_cr(&t):
            parser._frame_python(ch, text, out, final)
            return
        ch.pending = ""
        stats = parser.stats_for(source)
        while True:
            p = _next_record(&t, p, self.lay, cur, &prefix_end)
            if p < 0:
                break
            start = cur[0]
            if start < region_end:  # rare: text inside an announced SIP dump
                if start < proven_end:
                    if at(&t, start - 2) == 13:
                        embedded += 1
                        continue
                    # a real record inside: the count was false (``held`` is emitted now)
                    stats.error("sip_length")
                    region_end = proven_end = 0
                elif cur[2 * pino] >= 0:
                    embedded += 1
                    continue
            if has_held:
                msg = self._emit(parser, buf, &t, held, held_size, out, stats, source)
                if msg is not None and cur[2 * g_line] >= 0:
                    if self._truncation(&t, cur[2 * g_line], cur[2 * g_line + 1]):
                        msg.truncated = True
                if embedded or impossible:
                    self.count_anomalies(stats, embedded, impossible)
                    embedded, impossible = 0, False
            elif not _blank(&t, 0, start):
                stats.record("other")  # lines before the first record: log cut mid-record
            swap = held
            held = cur
            cur = swap
            has_held = True
            pos = held[1]
            body = held[16]
            if body < 0:
                continue
            size = held_size = _digits_value(&t, held[8], held[9], self.too_many)
            end = body + size
            if end <= pos + ran_to_end:
                continue  # the dump ran to its announced end: nothing inside to suspect
            udp = _known_transport(&t, held[10], held[11]) == _UDP
            if size > (self.max_udp if udp else self.max_stream):
                impossible = True
                continue
            if end + 2 >= t.n and not final and end - start < self.max_pending:
                ch.pending = buf[start:]  # the rest of this dump has not arrived yet
                return
            region_end = max(region_end, end)
            nl = _rfind_nl(&t, end - 6, end + 2)  # the dump's last line end: " \n"
            if nl >= 0 and (nl + 1 >= t.n or _record_start(&t, nl + 1)):
                proven_end = nl + 1
                region_end = max(region_end, proven_end)
        if not has_held:  # no record start at all
            if not _blank(&t, 0, t.n):
                stats.record("other")
            return
        if final or t.n - held[0] > self.max_pending:
            self._emit(parser, buf, &t, held, held_size, out, stats, source)
            self.count_anomalies(stats, embedded, impossible)
        else:
            ch.pending = buf[held[0]:]

    cdef bint _truncation(self, const Text *t, Py_ssize_t a, Py_ssize_t b) noexcept:
        """``framing._is_truncation(s[a:b])``: spaces, then sofia's marker."""
        cdef str marker = self.truncated
        cdef Py_ssize_t i, m = len(marker)
        while a < b and at(t, a) == 32:
            a += 1
        if b - a < m:
            return False
        for i in range(m):
            if at(t, a + i) != <uchar>marker[i]:
                return False
        return True

    cdef object _emit(self, parser, str buf, const Text *t, Py_ssize_t *sp, Py_ssize_t size,
                      list out, stats, str source):
        """``LogParser._record`` of the held record: SIP dumps here, the rest there."""
        cdef Record r
        cdef Py_ssize_t i, g
        cdef double ts
        cdef tuple headers
        cdef object value
        if sp[6] < 0:  # not a SIP dump
            r = Record.__new__(Record)
            r.string = buf
            r.ngroups = self.lay.ngroups
            for i in range(2 * (r.ngroups + 1)):
                r.spans[i] = sp[i]
            parser._record(source, r, size, out, stats)
            return None
        try:
            if sp[2] >= 0:
                base = parser._minute_cache.get(buf[sp[2]:sp[2] + 16])
                if base is not None:
                    ts = <double>base + _seconds(t, sp[2] + 17)
                else:
                    ts = parser._ts(buf[sp[2]:sp[3]], stats)
            else:
                ts = parser._legacy_ts(buf[sp[4]:sp[5]], stats)
            if sp[16] < 0 or sp[17] == sp[16]:
                stats.error("sip_header_only")
                return None
            headers = PyTuple_New(16)
            for i in range(16):
                g = self.lay.header[i]
                value = buf[sp[2 * g]:sp[2 * g + 1]] if sp[2 * g] >= 0 else ""
                Py_INCREF(value)  # PyTuple_SET_ITEM steals a reference
                PyTuple_SET_ITEM(headers, i, value)
            what = _WHAT_RECV if at(t, sp[6]) == 114 else _WHAT_SEND  # "r": recv
            transport = _transport(t, buf, sp[10], sp[11])
            peer_ip = buf[sp[12]:sp[13]]
            peer_port = int(buf[sp[14]:sp[15]])
            start = buf[sp[16]:sp[17]]
            if self.build is None:  # the compiled builder, called from C
                msg = build_sip_message(
                    ts, source, what, size, transport, peer_ip, peer_port, start, headers
                )
            else:
                msg = self.build(
                    ts, source, what, size, transport, peer_ip, peer_port, start, headers
                )
            if msg is None:
                stats.error("sip_start_line")
                return None
            out.append(msg)
            records = stats.records
            records["sip"] = records.get("sip", 0) + 1
            return msg
        except Exception:
            stats.error("internal")
            return None
