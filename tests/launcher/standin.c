/*
 * A stand-in for py.exe, python.exe (a base install or a venv's Scripts\python.exe) and nvidia-smi.exe, so that
 * tests/test_launcher_windows.py can run run_popup.bat under Wine's cmd without a real Python or GPU.
 *
 * One program, copied under each name; it acts by the name it was started as. Every call is appended to the log
 * file named by STANDIN_LOG as one JSON line {"exe": ..., "args": [...]} (the arguments as the C runtime parsed
 * them, which is what a real Python would see in sys.argv). It answers exactly the calls run_popup.bat makes; any
 * other call fails with exit code 99 and says so, so that a launcher change the stand-in does not know shows up
 * as a failing test, not as a silent pass.
 *
 * The machine it pretends to be is described by the key=value lines of the file named by STANDIN_CONFIG:
 *   python_version=3.12.4     what python.exe on PATH is (a venv's python reads its version from pyvenv.cfg)
 *   py_versions=3.13.1,3.10.11  the Pythons the py launcher can start
 *   no_tk=3.13                Python versions (major.minor) installed without Tk
 *   venv_without_pip=1        "-m venv" leaves pip out, as Debian's Python without python3-venv does
 *   pip_fails=1               "-m pip install" fails
 *   torch_install_fails=1     "-m pip install torch==..." (the CUDA build) fails
 *   internet=0                the connectivity check fails
 *   torch_build=cu130         what "-m wizard.hardware" prints; absent: it finds no usable NVIDIA GPU
 *   torch_advice=...          what "-m wizard.hardware" writes to stderr
 *   wizard_exit=3             the exit code of the wizard (popup_main.py)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <windows.h>

#define UNKNOWN_CALL 99

static wchar_t config_text[8192];

static void read_config(void) {
    const wchar_t *path = _wgetenv(L"STANDIN_CONFIG");
    config_text[0] = 0;
    if (!path) return;
    FILE *file = _wfopen(path, L"rb");
    if (!file) return;
    char bytes[8192];
    size_t size = fread(bytes, 1, sizeof bytes - 1, file);
    fclose(file);
    bytes[size] = 0;
    MultiByteToWideChar(CP_UTF8, 0, bytes, -1, config_text, 8192);
}

/* The value of `key` in the configuration, copied into `value`; empty when absent. */
static const wchar_t *setting(const wchar_t *key, wchar_t *value, size_t capacity) {
    size_t key_length = wcslen(key);
    value[0] = 0;
    for (const wchar_t *line = config_text; *line;) {
        const wchar_t *end = wcspbrk(line, L"\r\n");
        size_t length = end ? (size_t)(end - line) : wcslen(line);
        if (length > key_length && wcsncmp(line, key, key_length) == 0 && line[key_length] == L'=') {
            size_t value_length = length - key_length - 1;
            if (value_length >= capacity) value_length = capacity - 1;
            wcsncpy(value, line + key_length + 1, value_length);
            value[value_length] = 0;
            return value;
        }
        if (!end) break;
        line = end + 1;
    }
    return value;
}

static int setting_is(const wchar_t *key, const wchar_t *expected) {
    wchar_t value[256];
    return wcscmp(setting(key, value, 256), expected) == 0;
}

/* Is "3.13" one of the comma-separated versions in `list` (compared by major.minor)? */
static int listed(const wchar_t *list, const wchar_t *major_minor) {
    size_t length = wcslen(major_minor);
    for (const wchar_t *item = list; *item;) {
        if (wcsncmp(item, major_minor, length) == 0 && (item[length] == 0 || item[length] == L',' ||
                                                        item[length] == L'.'))
            return 1;
        const wchar_t *comma = wcschr(item, L',');
        if (!comma) break;
        item = comma + 1;
    }
    return 0;
}

static void major_minor_of(const wchar_t *version, wchar_t *out) {
    const wchar_t *first = wcschr(version, L'.');
    const wchar_t *second = first ? wcschr(first + 1, L'.') : NULL;
    size_t length = second ? (size_t)(second - version) : wcslen(version);
    wcsncpy(out, version, length);
    out[length] = 0;
}

static void write_json_string(FILE *file, const wchar_t *text) {
    char utf8[4096];
    WideCharToMultiByte(CP_UTF8, 0, text, -1, utf8, sizeof utf8, NULL, NULL);
    fputc('"', file);
    for (const unsigned char *c = (const unsigned char *)utf8; *c; c++) {
        if (*c == '"' || *c == '\\') fprintf(file, "\\%c", *c);
        else if (*c < 0x20) fprintf(file, "\\u%04x", *c);
        else fputc(*c, file);
    }
    fputc('"', file);
}

static void log_call(const wchar_t *exe, int argc, wchar_t **argv) {
    const wchar_t *path = _wgetenv(L"STANDIN_LOG");
    if (!path) return;
    FILE *file = _wfopen(path, L"ab");
    if (!file) return;
    fputs("{\"exe\": ", file);
    write_json_string(file, exe);
    fputs(", \"args\": [", file);
    for (int i = 1; i < argc; i++) {
        if (i > 1) fputs(", ", file);
        write_json_string(file, argv[i]);
    }
    fputs("]}\n", file);
    fclose(file);
}

static int same_file_contents(const wchar_t *a, const wchar_t *b) {
    FILE *first = _wfopen(a, L"rb"), *second = _wfopen(b, L"rb");
    int same = first && second;
    while (same) {
        int x = fgetc(first), y = fgetc(second);
        if (x != y) same = 0;
        if (x == EOF || y == EOF) break;
    }
    if (first) fclose(first);
    if (second) fclose(second);
    return same;
}

static int directory_exists(const wchar_t *path) {
    DWORD attributes = GetFileAttributesW(path);
    return attributes != INVALID_FILE_ATTRIBUTES && (attributes & FILE_ATTRIBUTE_DIRECTORY);
}

/* "-m venv DIR": the layout a real venv has on Windows, with this program as its python.exe. */
static int make_venv(const wchar_t *self, const wchar_t *version, const wchar_t *dir) {
    wchar_t path[MAX_PATH * 2];
    CreateDirectoryW(dir, NULL);
    swprintf(path, MAX_PATH * 2, L"%ls\\Scripts", dir);
    CreateDirectoryW(path, NULL);
    swprintf(path, MAX_PATH * 2, L"%ls\\Scripts\\python.exe", dir);
    if (!CopyFileW(self, path, FALSE)) {
        fwprintf(stderr, L"Error: could not copy the interpreter to %ls\n", path);
        return 1;
    }
    swprintf(path, MAX_PATH * 2, L"%ls\\pyvenv.cfg", dir);
    FILE *cfg = _wfopen(path, L"wb");
    if (!cfg) return 1;
    char utf8[64];
    WideCharToMultiByte(CP_UTF8, 0, version, -1, utf8, sizeof utf8, NULL, NULL);
    fprintf(cfg, "include-system-site-packages = false\r\nversion = %s\r\n", utf8);
    fclose(cfg);
    swprintf(path, MAX_PATH * 2, L"%ls\\Lib", dir);
    CreateDirectoryW(path, NULL);
    swprintf(path, MAX_PATH * 2, L"%ls\\Lib\\site-packages", dir);
    CreateDirectoryW(path, NULL);
    if (setting_is(L"venv_without_pip", L"1")) {
        fwprintf(stderr, L"Error: Command '['%ls\\Scripts\\python.exe', '-m', 'ensurepip']' returned non-zero exit "
                         L"status 1.\n", dir);
        return 1;
    }
    swprintf(path, MAX_PATH * 2, L"%ls\\Lib\\site-packages\\pip", dir);
    CreateDirectoryW(path, NULL);
    return 0;
}

/* "-m pip ...", run by the interpreter in `home` (the folder of python.exe). */
static int pip(const wchar_t *home, int is_venv, int argc, wchar_t **argv) {
    wchar_t pip_dir[MAX_PATH * 2];
    swprintf(pip_dir, MAX_PATH * 2, L"%ls\\..\\Lib\\site-packages\\pip", home);
    if (is_venv && !directory_exists(pip_dir)) {
        fwprintf(stderr, L"No module named pip\n");
        return 1;
    }
    if (argc >= 1 && wcscmp(argv[0], L"--version") == 0) {
        wprintf(L"pip 25.0 from %ls (stand-in)\n", pip_dir);
        return 0;
    }
    if (argc >= 1 && wcscmp(argv[0], L"install") == 0) {
        int torch = 0;
        for (int i = 1; i < argc; i++) torch |= wcsncmp(argv[i], L"torch==", 7) == 0;
        if (setting_is(L"pip_fails", L"1") || (torch && setting_is(L"torch_install_fails", L"1"))) {
            fwprintf(stderr, L"ERROR: No matching distribution found (stand-in)\n");
            return 1;
        }
        wprintf(L"Successfully installed (stand-in)\n");
        return 0;
    }
    fwprintf(stderr, L"stand-in pip: unknown call\n");
    return UNKNOWN_CALL;
}

/* A Python interpreter of `version`; argv[0] is its first option (sys.argv as the launcher passes it). */
static int python(const wchar_t *self, const wchar_t *version, int is_venv, int argc, wchar_t **argv) {
    wchar_t home[MAX_PATH * 2], major_minor[32], value[1024];
    wcscpy(home, self);
    *wcsrchr(home, L'\\') = 0;
    major_minor_of(version, major_minor);
    if (argc >= 1 && wcscmp(argv[0], L"--version") == 0) {
        wprintf(L"Python %ls\n", version);
        return 0;
    }
    if (argc >= 2 && wcscmp(argv[0], L"-c") == 0) {
        const wchar_t *code = argv[1];
        if (wcscmp(code, L"import tkinter") == 0) {
            if (!listed(setting(L"no_tk", value, 1024), major_minor)) return 0;
            fwprintf(stderr, L"ModuleNotFoundError: No module named 'tkinter'\n");
            return 1;
        }
        if (wcsstr(code, L"urlopen")) return setting_is(L"internet", L"0") ? 1 : 0;
        if (wcsstr(code, L"read() !=") && argc == 4) return same_file_contents(argv[2], argv[3]) ? 0 : 1;
        fwprintf(stderr, L"stand-in python: unknown -c program: %ls\n", code);
        return UNKNOWN_CALL;
    }
    if (argc >= 2 && wcscmp(argv[0], L"-m") == 0) {
        if (wcscmp(argv[1], L"venv") == 0 && argc == 3 && !is_venv) return make_venv(self, version, argv[2]);
        if (wcscmp(argv[1], L"pip") == 0) return pip(home, is_venv, argc - 2, argv + 2);
        if (wcscmp(argv[1], L"wizard.hardware") == 0 && argc == 2) {
            if (*setting(L"torch_advice", value, 1024)) fwprintf(stderr, L"%ls\n", value);
            if (!*setting(L"torch_build", value, 1024)) return 1;
            wprintf(L"%ls\n", value);
            return 0;
        }
    }
    size_t length = argc >= 1 ? wcslen(argv[0]) : 0;
    if (length > 3 && wcscmp(argv[0] + length - 3, L".py") == 0) {
        wprintf(L"stand-in wizard started\n");
        return _wtoi(setting(L"wizard_exit", value, 1024));
    }
    fwprintf(stderr, L"stand-in python: unknown call\n");
    return UNKNOWN_CALL;
}

/* py.exe: "-X.Y" picks an installed version, no version picks the newest (the list is newest first). */
static int py_launcher(const wchar_t *self, int argc, wchar_t **argv) {
    wchar_t versions[1024], chosen[64] = L"";
    setting(L"py_versions", versions, 1024);
    if (argc >= 1 && argv[0][0] == L'-' && iswdigit(argv[0][1])) {
        const wchar_t *wanted = argv[0] + 1;
        for (const wchar_t *item = versions; *item;) {
            const wchar_t *comma = wcschr(item, L',');
            size_t length = comma ? (size_t)(comma - item) : wcslen(item);
            wchar_t version[64], major_minor[32];
            wcsncpy(version, item, length);
            version[length] = 0;
            major_minor_of(version, major_minor);
            if (wcscmp(major_minor, wanted) == 0) wcscpy(chosen, version);
            if (!comma) break;
            item = comma + 1;
        }
        argc--, argv++;
    } else if (*versions) {
        const wchar_t *comma = wcschr(versions, L',');
        size_t length = comma ? (size_t)(comma - versions) : wcslen(versions);
        wcsncpy(chosen, versions, length);
        chosen[length] = 0;
    }
    if (!*chosen) {
        fwprintf(stderr, L"No suitable Python runtime found\n");
        return 103;
    }
    return python(self, chosen, 0, argc, argv);
}

int wmain(int argc, wchar_t **argv) {
    wchar_t self[MAX_PATH * 2], name[MAX_PATH], venv_cfg[MAX_PATH * 2], value[256];
    GetModuleFileNameW(NULL, self, MAX_PATH * 2);
    wcscpy(name, wcsrchr(self, L'\\') + 1);
    _wcslwr(name);
    read_config();
    log_call(self, argc, argv);
    if (wcscmp(name, L"nvidia-smi.exe") == 0) {
        wprintf(L"NVIDIA-SMI stand-in: one GPU\n");
        return 0;
    }
    if (wcscmp(name, L"py.exe") == 0) return py_launcher(self, argc - 1, argv + 1);
    /* python.exe: a venv's when pyvenv.cfg lies one folder up (as real Python decides), else the base install */
    wcscpy(venv_cfg, self);
    *wcsrchr(venv_cfg, L'\\') = 0;
    wcscat(venv_cfg, L"\\..\\pyvenv.cfg");
    FILE *cfg = _wfopen(venv_cfg, L"rb");
    if (cfg) {
        char line[256], version[64] = "";
        while (fgets(line, sizeof line, cfg))
            if (sscanf(line, "version = %63s", version) == 1) break;
        fclose(cfg);
        MultiByteToWideChar(CP_UTF8, 0, version, -1, value, 256);
        return python(self, value, 1, argc - 1, argv + 1);
    }
    return python(self, setting(L"python_version", value, 256), 0, argc - 1, argv + 1);
}
