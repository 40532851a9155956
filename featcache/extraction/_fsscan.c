/* Listing a folder and stat-ing its files without Python objects per file, and without the GIL.

   An update of a cache of millions of images lists every folder and stats every file; in Python each
   name and each stat result is an object, and a stat costs about twice the system call. These two
   functions do the work of a whole folder in one call, the interpreter lock released, so that other
   threads run meanwhile. featcache.extraction.fsscan wraps them and falls back to plain Python where
   this module was not built. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __APPLE__
#define MTIME_NS(st) ((int64_t)(st).st_mtimespec.tv_sec * 1000000000LL + (int64_t)(st).st_mtimespec.tv_nsec)
#else
#define MTIME_NS(st) ((int64_t)(st).st_mtim.tv_sec * 1000000000LL + (int64_t)(st).st_mtim.tv_nsec)
#endif

/* Kinds of directory entries, as list_names gives them. */
#define KIND_FILE 'f'
#define KIND_DIR 'd'
#define KIND_LINK 'l'
#define KIND_OTHER 'o'

static char *c_path(Py_buffer *view) {
    char *path = malloc((size_t)view->len + 1);
    if (path != NULL) {
        memcpy(path, view->buf, (size_t)view->len);
        path[view->len] = '\0';
    }
    return path;
}

static char kind_of_mode(mode_t mode) {
    if (S_ISREG(mode)) return KIND_FILE;
    if (S_ISDIR(mode)) return KIND_DIR;
    if (S_ISLNK(mode)) return KIND_LINK;
    return KIND_OTHER;
}

static char kind_of_entry(int fd, const struct dirent *entry) {
    switch (entry->d_type) {
    case DT_REG: return KIND_FILE;
    case DT_DIR: return KIND_DIR;
    case DT_LNK: return KIND_LINK;
    case DT_UNKNOWN: {
        struct stat st;
        if (fstatat(fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) return KIND_OTHER;
        return kind_of_mode(st.st_mode);
    }
    default: return KIND_OTHER;
    }
}

typedef struct {
    char *names;  /* the names one after the other, each NUL-ended */
    size_t used, size;
    char *kinds;
    size_t count, kinds_size, width;
} listing_t;

static int listing_add(listing_t *found, const char *name, char kind) {
    size_t length = strlen(name);
    if (found->used + length + 1 > found->size) {
        size_t size = found->size ? found->size * 2 : 1 << 16;
        while (size < found->used + length + 1) size *= 2;
        char *grown = realloc(found->names, size);
        if (grown == NULL) return -1;
        found->names = grown;
        found->size = size;
    }
    if (found->count == found->kinds_size) {
        size_t size = found->kinds_size ? found->kinds_size * 2 : 1 << 12;
        char *grown = realloc(found->kinds, size);
        if (grown == NULL) return -1;
        found->kinds = grown;
        found->kinds_size = size;
    }
    memcpy(found->names + found->used, name, length + 1);
    found->used += length + 1;
    found->kinds[found->count++] = kind;
    if (length > found->width) found->width = length;
    return 0;
}

/* list_names(folder) -> (names, width, kinds): the entries of folder but "." and "..", as len(kinds)
   records of width bytes, NUL-padded, in the order the file system gives them, and the kind of each
   ("f" regular file, "d" folder, "l" symlink, "o" other; symlinks are not followed). OSError when the
   folder cannot be listed. */
static PyObject *list_names(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer folder;
    if (!PyArg_ParseTuple(args, "y*", &folder)) return NULL;
    char *path = c_path(&folder);
    if (path == NULL) {
        PyBuffer_Release(&folder);
        return PyErr_NoMemory();
    }
    listing_t found = {0};
    int error = 0, no_memory = 0;
    Py_BEGIN_ALLOW_THREADS
    DIR *dir = opendir(path);
    if (dir == NULL) {
        error = errno;
    } else {
        int fd = dirfd(dir);
        struct dirent *entry;
        for (;;) {
            errno = 0;
            entry = readdir(dir);
            if (entry == NULL) {
                error = errno;
                break;
            }
            const char *name = entry->d_name;
            if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
            if (listing_add(&found, name, kind_of_entry(fd, entry)) != 0) {
                no_memory = 1;
                break;
            }
        }
        closedir(dir);
    }
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (no_memory) {
        PyErr_NoMemory();
    } else if (error) {
        errno = error;
        PyObject *name = PyBytes_FromStringAndSize(folder.buf, folder.len);
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
        Py_XDECREF(name);
    } else {
        size_t width = found.width ? found.width : 1;
        PyObject *names = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(found.count * width));
        if (names != NULL) {
            char *out = PyBytes_AS_STRING(names);
            memset(out, 0, found.count * width);
            const char *at = found.names;
            for (size_t i = 0; i < found.count; i++) {
                size_t length = strlen(at);
                memcpy(out + i * width, at, length);
                at += length + 1;
            }
            result = Py_BuildValue("(Nny#)", names, (Py_ssize_t)width, found.kinds ? found.kinds : "",
                                   (Py_ssize_t)found.count);
        }
    }
    free(found.names);
    free(found.kinds);
    free(path);
    PyBuffer_Release(&folder);
    return result;
}

/* stat_names(folder, names, width, out): for each of the len(names) / width NUL-padded names of folder,
   its size and modification time in ns into out (two native int64 a name), or -1 and the errno where it
   cannot be stat-ed (every name, when the folder cannot be opened). Symlinks are followed. */
static PyObject *stat_names(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer folder, names, out;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*y*nw*", &folder, &names, &width, &out)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t count = width > 0 ? names.len / width : 0;
    char *path = NULL, *name = NULL;
    if (width <= 0 || names.len % width != 0) {
        PyErr_SetString(PyExc_ValueError, "names must be records of width bytes");
    } else if (out.len < count * 16) {
        PyErr_SetString(PyExc_ValueError, "out is too small: 16 bytes a name");
    } else if ((path = c_path(&folder)) == NULL || (name = malloc((size_t)width + 1)) == NULL) {
        PyErr_NoMemory();
    } else {
        int64_t *table = (int64_t *)out.buf;
        const char *records = (const char *)names.buf;
        Py_BEGIN_ALLOW_THREADS
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int error = fd < 0 ? errno : 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            struct stat st;
            memcpy(name, records + i * width, (size_t)width);
            name[width] = '\0';
            if (fd < 0) {
                table[2 * i] = -1;
                table[2 * i + 1] = error;
            } else if (fstatat(fd, name, &st, 0) != 0) {
                table[2 * i] = -1;
                table[2 * i + 1] = errno;
            } else {
                table[2 * i] = (int64_t)st.st_size;
                table[2 * i + 1] = MTIME_NS(st);
            }
        }
        if (fd >= 0) close(fd);
        Py_END_ALLOW_THREADS
        Py_INCREF(Py_None);
        result = Py_None;
    }
    free(name);
    free(path);
    PyBuffer_Release(&folder);
    PyBuffer_Release(&names);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"list_names", list_names, METH_VARARGS, "The entries of a folder and their kinds (see _fsscan.c)."},
    {"stat_names", stat_names, METH_VARARGS, "Size and mtime of names of a folder (see _fsscan.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_fsscan", .m_doc = NULL, .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fsscan(void) { return PyModule_Create(&module); }
