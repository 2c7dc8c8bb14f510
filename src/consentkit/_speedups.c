/* The compiled half of consentkit.keywords: classifies ASCII message bodies.
 *
 * Most inbound replies are ASCII, and classifying one in Python costs several string copies and a
 * list of word objects.  AsciiClassifier.classify does the same work in one pass over the body
 * without creating any Python object: it builds the normal form of the body (keywords.normalize
 * for ASCII text) in a stack buffer, compares it with the exact keywords, then searches its first
 * `scan_chars` characters for an opt-out keyword standing as whole word(s).
 *
 * It returns one of the shared match objects it was built with, and hands any body it does not
 * handle (not a str, or not ASCII) to the fallback it was built with: the Python code.  The Python
 * code in keywords.py is the specification; tests/test_speedups.py and tests/test_keywords.py check
 * that both give the same results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* The normal form is built in a buffer on the stack, so scan_chars has an upper bound. */
#define MAX_SCAN_CHARS 8190
/* How many word starts the first pass notes; the search goes on past them if need be. */
#define MAX_STARTS 64

typedef struct {
    char *text; /* the normalised keyword: ASCII, no NUL inside */
    Py_ssize_t length;
    PyObject *match; /* strong reference */
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *exact; /* every ASCII keyword of the set, with its exact match */
    Py_ssize_t exact_count;
    Py_ssize_t longest_exact;
    /* ASCII opt-out keywords grouped by first character, each group in the order its keywords
     * are tried at one position: those starting with character c are possible[first[c]] up to
     * possible[first[c + 1]]. */
    Entry *possible;
    Py_ssize_t possible_count;
    Py_ssize_t first[129];
    PyObject *no_match;
    PyObject *fallback; /* classifies what is not ASCII text: the pure-Python code */
    Py_ssize_t scan_chars;
    Py_ssize_t limit; /* characters of the normal form built: enough for the search and for the
                       * longest exact keyword, plus one to tell whether there is more */
} AsciiClassifier;

/* What one ASCII character becomes in the normal form: letters lowered; controls, DEL, hyphens
 * and underscores read as a space; digits, space and other punctuation unchanged.
 * (Generated from keywords._ASCII_TABLE's rules; tests compare both implementations.) */
static const unsigned char normal_char[128] = {
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x20, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
    0x40, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x5b, 0x5c, 0x5d, 0x5e, 0x20,
    0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x20,
};

/* 1 for letters and digits: the characters a word (and the trimmed normal form) is made of. */
static const unsigned char is_alnum[128] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static void
free_entries(Entry *entries, Py_ssize_t count)
{
    if (entries == NULL) {
        return;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyMem_Free(entries[i].text);
        Py_XDECREF(entries[i].match);
    }
    PyMem_Free(entries);
}

/* Copy a sequence of (keyword, match) pairs into a new array; *count is set to its length. */
static Entry *
read_entries(PyObject *pairs, const char *what, Py_ssize_t *count)
{
    PyObject *items = PySequence_Fast(pairs, "expected a sequence of (keyword, match) pairs");
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t size = PySequence_Fast_GET_SIZE(items);
    Entry *entries = PyMem_Calloc(size > 0 ? (size_t)size : 1, sizeof(Entry));
    if (entries == NULL) {
        Py_DECREF(items);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(items, i);
        PyObject *keyword;
        PyObject *match;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_Format(PyExc_TypeError, "%s[%zd]: expected a (keyword, match) tuple", what, i);
            goto error;
        }
        keyword = PyTuple_GET_ITEM(pair, 0);
        match = PyTuple_GET_ITEM(pair, 1);
        if (!PyUnicode_Check(keyword)) {
            PyErr_Format(PyExc_TypeError, "%s[%zd]: the keyword must be a str", what, i);
            goto error;
        }
        Py_ssize_t length;
        const char *text = PyUnicode_AsUTF8AndSize(keyword, &length);
        if (text == NULL) {
            goto error;
        }
        if (!PyUnicode_IS_ASCII(keyword) || length == 0 || (Py_ssize_t)strlen(text) != length) {
            PyErr_Format(PyExc_ValueError,
                         "%s[%zd]: the keyword must be non-empty ASCII without NUL", what, i);
            goto error;
        }
        entries[i].text = PyMem_Malloc((size_t)length);
        if (entries[i].text == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        memcpy(entries[i].text, text, (size_t)length);
        entries[i].length = length;
        Py_INCREF(match);
        entries[i].match = match;
    }
    Py_DECREF(items);
    *count = size;
    return entries;

error:
    free_entries(entries, size);
    Py_DECREF(items);
    return NULL;
}

static int AsciiClassifier_clear(AsciiClassifier *self);

static int
AsciiClassifier_init(AsciiClassifier *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"exact", "possible", "no_match", "scan_chars", "fallback", NULL};
    PyObject *exact_pairs;
    PyObject *possible_pairs;
    PyObject *no_match;
    Py_ssize_t scan_chars;
    PyObject *fallback;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOnO:AsciiClassifier", names, &exact_pairs,
                                     &possible_pairs, &no_match, &scan_chars, &fallback)) {
        return -1;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return -1;
    }
    if (self->exact != NULL || self->possible != NULL) {
        PyErr_SetString(PyExc_TypeError, "AsciiClassifier is already initialised");
        return -1;
    }
    if (scan_chars < 0 || scan_chars > MAX_SCAN_CHARS) {
        PyErr_Format(PyExc_ValueError, "scan_chars must be between 0 and %d", MAX_SCAN_CHARS);
        return -1;
    }
    Py_ssize_t exact_count = 0;
    Py_ssize_t possible_count = 0;
    Entry *exact = read_entries(exact_pairs, "exact", &exact_count);
    if (exact == NULL) {
        return -1;
    }
    Entry *possible = read_entries(possible_pairs, "possible", &possible_count);
    if (possible == NULL) {
        free_entries(exact, exact_count);
        return -1;
    }
    for (Py_ssize_t i = 0; i < possible_count; i++) {
        if (!is_alnum[(unsigned char)possible[i].text[0]]) {
            PyErr_Format(PyExc_ValueError,
                         "possible[%zd]: an opt-out keyword must start with a letter or digit", i);
            free_entries(exact, exact_count);
            free_entries(possible, possible_count);
            return -1;
        }
    }
    /* A stable counting sort of the opt-out keywords by first character. */
    Entry *grouped = PyMem_Calloc(possible_count > 0 ? (size_t)possible_count : 1, sizeof(Entry));
    if (grouped == NULL) {
        free_entries(exact, exact_count);
        free_entries(possible, possible_count);
        PyErr_NoMemory();
        return -1;
    }
    memset(self->first, 0, sizeof(self->first));
    for (Py_ssize_t i = 0; i < possible_count; i++) {
        self->first[(unsigned char)possible[i].text[0] + 1]++;
    }
    for (int c = 0; c < 128; c++) {
        self->first[c + 1] += self->first[c];
    }
    Py_ssize_t next[128];
    memcpy(next, self->first, sizeof(next));
    for (Py_ssize_t i = 0; i < possible_count; i++) {
        grouped[next[(unsigned char)possible[i].text[0]]++] = possible[i];
    }
    PyMem_Free(possible); /* the texts and matches now belong to grouped */

    self->exact = exact;
    self->exact_count = exact_count;
    self->longest_exact = 0;
    for (Py_ssize_t i = 0; i < exact_count; i++) {
        if (exact[i].length > self->longest_exact) {
            self->longest_exact = exact[i].length;
        }
    }
    if (self->longest_exact > MAX_SCAN_CHARS) {
        PyErr_Format(PyExc_ValueError, "exact keywords must be at most %d characters long",
                     MAX_SCAN_CHARS);
        AsciiClassifier_clear(self);
        free_entries(grouped, possible_count);
        return -1;
    }
    self->possible = grouped;
    self->possible_count = possible_count;
    self->no_match = Py_NewRef(no_match);
    self->fallback = Py_NewRef(fallback);
    self->scan_chars = scan_chars;
    self->limit = (scan_chars > self->longest_exact ? scan_chars : self->longest_exact) + 1;
    return 0;
}

static int
AsciiClassifier_traverse(AsciiClassifier *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->no_match);
    Py_VISIT(self->fallback);
    for (Py_ssize_t i = 0; i < self->exact_count; i++) {
        Py_VISIT(self->exact[i].match);
    }
    for (Py_ssize_t i = 0; i < self->possible_count; i++) {
        Py_VISIT(self->possible[i].match);
    }
    return 0;
}

static int
AsciiClassifier_clear(AsciiClassifier *self)
{
    free_entries(self->exact, self->exact_count);
    self->exact = NULL;
    self->exact_count = 0;
    free_entries(self->possible, self->possible_count);
    self->possible = NULL;
    self->possible_count = 0;
    Py_CLEAR(self->no_match);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
AsciiClassifier_dealloc(AsciiClassifier *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    AsciiClassifier_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* The opt-out keyword standing as whole word(s) at text[position], where a word starts, or NULL. */
static inline const Entry *
match_at(const AsciiClassifier *self, const char *text, Py_ssize_t scanned, Py_ssize_t position)
{
    unsigned char c = (unsigned char)text[position];
    Py_ssize_t room = scanned - position;
    for (Py_ssize_t i = self->first[c]; i < self->first[c + 1]; i++) {
        const Entry *entry = &self->possible[i];
        Py_ssize_t length = entry->length;
        if (length <= room && memcmp(entry->text, text + position, (size_t)length) == 0
            && (length == room || !is_alnum[(unsigned char)text[position + length]])) {
            return entry;
        }
    }
    return NULL;
}

static PyObject *
AsciiClassifier_classify(AsciiClassifier *self, PyObject *body)
{
    if (self->no_match == NULL) {
        PyErr_SetString(PyExc_TypeError, "AsciiClassifier is not initialised");
        return NULL;
    }
    if (!PyUnicode_Check(body)) {
        return PyObject_CallOneArg(self->fallback, body);
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(body) < 0) {
        return NULL;
    }
#endif
    if (!PyUnicode_IS_ASCII(body)) {
        return PyObject_CallOneArg(self->fallback, body);
    }
    const unsigned char *source = PyUnicode_1BYTE_DATA(body);
    Py_ssize_t start = 0;
    Py_ssize_t end = PyUnicode_GET_LENGTH(body);

    /* The normal form runs from the first letter or digit to the last one: whatever surrounds
     * them is whitespace, controls or punctuation, all stripped at the ends. */
    while (start < end && !is_alnum[source[start]]) {
        start++;
    }
    while (end > start && !is_alnum[source[end - 1]]) {
        end--;
    }
    if (start == end) {
        return Py_NewRef(self->no_match);
    }

    /* Build the normal form, runs of spaces collapsed, up to one character past what the search
     * and the exact comparison read: enough to tell whether the form is longer than scan_chars
     * and where to cut it, or longer than every exact keyword.
     * Note on the way the word starts where an opt-out keyword may begin: a keyword stands as
     * whole word(s), so it starts with a letter or digit that follows no letter or digit. */
    char text[MAX_SCAN_CHARS + 2];
    Py_ssize_t starts[MAX_STARTS];
    int start_count = 0;
    int more_starts = 0;
    Py_ssize_t limit = self->limit;
    Py_ssize_t length = 0;
    Py_ssize_t index = start;
    int after_space = 0;
    int after_alnum = 0;
    const Py_ssize_t *first = self->first;
    for (; index < end && length < limit; index++) {
        unsigned char c = normal_char[source[index]];
        if (c == ' ') {
            if (!after_space) {
                text[length++] = ' ';
                after_space = 1;
            }
            after_alnum = 0;
            continue;
        }
        after_space = 0;
        if (!is_alnum[c]) {
            after_alnum = 0;
        }
        else if (!after_alnum) {
            after_alnum = 1;
            if (first[c] != first[c + 1]) {
                if (start_count < MAX_STARTS) {
                    starts[start_count++] = length;
                }
                else {
                    more_starts = 1;
                }
            }
        }
        text[length++] = (char)c;
    }
    int whole = index == end; /* text holds the entire normal form */

    if (whole && length <= self->longest_exact) {
        for (Py_ssize_t i = 0; i < self->exact_count; i++) {
            const Entry *entry = &self->exact[i];
            if (entry->length == length && memcmp(entry->text, text, (size_t)length) == 0) {
                return Py_NewRef(entry->match);
            }
        }
    }

    /* Past scan_chars characters, the search reads up to the last space at or before that
     * index, so that a word cut in half cannot pass for a keyword. */
    Py_ssize_t scanned = length;
    if (!whole || length > self->scan_chars) {
        scanned = 0;
        for (Py_ssize_t i = self->scan_chars; i > 0; i--) {
            if (text[i] == ' ') {
                scanned = i;
                break;
            }
        }
    }
    /* The leftmost word start where an opt-out keyword stands as whole word(s); at one position
     * the keywords are tried in the order given, longest first. */
    for (int i = 0; i < start_count && starts[i] < scanned; i++) {
        const Entry *entry = match_at(self, text, scanned, starts[i]);
        if (entry != NULL) {
            return Py_NewRef(entry->match);
        }
    }
    if (more_starts) {
        /* More word starts than were noted: go on from the last one noted. */
        int after = 1; /* the last noted start is a letter or digit */
        for (Py_ssize_t position = starts[MAX_STARTS - 1] + 1; position < scanned; position++) {
            int alnum = is_alnum[(unsigned char)text[position]];
            if (alnum && !after) {
                const Entry *entry = match_at(self, text, scanned, position);
                if (entry != NULL) {
                    return Py_NewRef(entry->match);
                }
            }
            after = alnum;
        }
    }
    return Py_NewRef(self->no_match);
}

static PyMethodDef AsciiClassifier_methods[] = {
    {"classify", (PyCFunction)AsciiClassifier_classify, METH_O,
     "classify(body, /)\n--\n\n"
     "Return the match for an ASCII str body; hand anything else to the fallback."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot AsciiClassifier_slots[] = {
    {Py_tp_doc, "AsciiClassifier(exact, possible, no_match, scan_chars, fallback)\n--\n\n"
                "Classifies ASCII message bodies like consentkit.keywords.KeywordMatcher."},
    {Py_tp_init, AsciiClassifier_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, AsciiClassifier_dealloc},
    {Py_tp_traverse, AsciiClassifier_traverse},
    {Py_tp_clear, AsciiClassifier_clear},
    {Py_tp_methods, AsciiClassifier_methods},
    {0, NULL},
};

static PyType_Spec AsciiClassifier_spec = {
    .name = "consentkit._speedups.AsciiClassifier",
    .basicsize = sizeof(AsciiClassifier),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = AsciiClassifier_slots,
};

static int
speedups_exec(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &AsciiClassifier_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    int result = PyModule_AddObjectRef(module, "AsciiClassifier", type);
    Py_DECREF(type);
    if (result < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "MAX_SCAN_CHARS", MAX_SCAN_CHARS);
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "consentkit._speedups",
    .m_doc = "Compiled classification of ASCII inbound replies (see consentkit.keywords).",
    .m_size = 0,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
