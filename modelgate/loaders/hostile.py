"""Globals that are not merely unlisted but known code-execution gadgets, and what each does.

The allow-list (:mod:`modelgate.loaders.allowlist`) decides what a pickle may name; this table
only explains. A class of the user's own that is not allowed is an "unknown class"; ``os.system``
in a checkpoint is an attack. :func:`explain` tells the two apart so that MG901 can say so.

Gathered from what scanners flag (picklescan's and modelscan's unsafe globals, fickling's
unsafe imports), from the payloads of published bypasses, and from the standard library
modules that reach a shell, a compiler, the network or another unpickler. A name is matched
exactly, then by its module and each parent module, then (for an attribute path such as
``torch.serialization.os.system``) by the gadget the path ends in.
"""

from __future__ import annotations

_SHELL = "runs a shell command"
_PROCESS = "starts a process"
_PYTHON = "runs Python code"
_IMPORT = "imports any module"
_ATTR = "reaches any attribute by name, e.g. os.system from an allowed object"
_NESTED = "unpickles a nested payload the scanner never sees"
_FILES = "reads, writes or deletes files"
_NET = "opens network connections"
_NATIVE = "calls native code"

_EXEC = ("execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
         "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
         "posix_spawn", "posix_spawnp", "fork", "forkpty", "startfile")  # fmt: skip
_FILE_CALLS = ("remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
               "open", "fdopen", "truncate", "chmod", "chown", "symlink", "link", "makedirs",
               "mkdir")  # fmt: skip
_PY2_BUILTINS = (("eval", "evaluates a Python expression"), ("exec", _PYTHON),
                 ("execfile", _PYTHON), ("compile", "compiles Python code"),
                 ("__import__", _IMPORT), ("getattr", _ATTR),
                 ("open", "opens any file for reading or writing"))  # fmt: skip

# exact names
_NAMES: dict[str, str] = {
    **{f"{m}.system": _SHELL for m in ("os", "posix", "nt")},
    **{f"{m}.popen": _SHELL for m in ("os", "posix", "nt", "platform")},
    **{f"os.{f}": _PROCESS for f in _EXEC},
    **{f"os.{f}": _FILES for f in _FILE_CALLS},
    **{f"{m}.{f}": what for m in ("__builtin__", "__builtins__") for f, what in _PY2_BUILTINS},
    "os.kill": "sends a signal to a process",
    "os.putenv": "changes the environment of every process it starts",
    "builtins.eval": "evaluates a Python expression",
    "builtins.exec": _PYTHON,
    "builtins.execfile": "runs a Python file",
    "builtins.compile": "compiles Python code for a later eval or exec",
    "builtins.__import__": _IMPORT,
    "builtins.getattr": _ATTR,
    "builtins.setattr": "replaces any attribute, e.g. a function other code calls",
    "builtins.delattr": "deletes any attribute",
    "builtins.open": "opens any file for reading or writing",
    "builtins.input": "reads from the terminal",
    "builtins.breakpoint": "starts a debugger, which runs code",
    "builtins.globals": "hands out the interpreter's globals",
    "builtins.vars": "hands out any object's namespace",
    "builtins.apply": "calls any function",
    "builtins.memoryview": "exposes raw memory",
    "io.open": "opens any file for reading or writing",
    "_io.open": "opens any file for reading or writing",
    "io.FileIO": "opens any file for reading or writing",
    "_io.FileIO": "opens any file for reading or writing",
    "codecs.open": "opens any file for reading or writing",
    "pathlib.Path.write_text": _FILES,
    "pathlib.Path.write_bytes": _FILES,
    "pathlib.Path.unlink": _FILES,
    "marshal.loads": "loads raw Python bytecode",
    "marshal.load": "loads raw Python bytecode",
    "types.FunctionType": "builds a function from raw bytecode",
    "types.CodeType": "builds raw Python bytecode",
    "types.MethodType": "binds any function as a method",
    "functools.partial": "binds arguments for a later call, to chain gadgets",
    "functools.reduce": "calls a function over values, to chain gadgets",
    "operator.attrgetter": _ATTR,
    "operator.methodcaller": "calls any method by name",
    "operator.itemgetter": "reaches any item by key, to chain gadgets",
    "_operator.attrgetter": _ATTR,
    "_operator.methodcaller": "calls any method by name",
    "asyncio.create_subprocess_shell": _SHELL,
    "asyncio.create_subprocess_exec": _PROCESS,
    "numpy.testing._private.utils.runstring": _PYTHON,
    "numpy.load": "loads a nested .npy or pickle (allow_pickle)",
    "numpy.lib.npyio.load": "loads a nested .npy or pickle (allow_pickle)",
    "numpy.fromfile": _FILES,
    "numpy.save": _FILES,
    "numpy.lib.format.read_array": "loads a nested pickle (allow_pickle)",
    "torch.load": "loads a nested checkpoint, which may run code (weights_only=False)",
    "torch.serialization.load": "loads a nested checkpoint, which may run code",
    "torch.serialization._load": "loads a nested checkpoint, which may run code",
    "torch.storage._load_from_bytes": "loads a nested checkpoint, which may run code",
    "torch.compile": "compiles and runs generated code",
    "torch.utils._config_module.ConfigModule": "loads configuration that may run code",
    "torch.fx.graph_module._exec_with_source": _PYTHON,
    "torch.fx.graph_module.reduce_graph_module": "rebuilds a module from Python source",
    "torch.fx.graph_module._forward_from_src": "rebuilds a module from Python source",
    "torch._C.import_ir_module": "loads TorchScript code",
    "torch.jit.load": "loads TorchScript code, which may run at load",
    "torch.jit._serialization.load": "loads TorchScript code, which may run at load",
    "torch.jit.script": "compiles Python source as TorchScript",
    "torch.jit.CompilationUnit": "compiles TorchScript source",
    "torch._C.CompilationUnit": "compiles TorchScript source",
    "torch._C._load_for_lite_interpreter": "loads TorchScript code",
    "torch.package.package_importer.PackageImporter": "imports code packaged in the file",
    "timeit.timeit": _PYTHON,
    "timeit.repeat": _PYTHON,
    "cProfile.run": _PYTHON,
    "cProfile.runctx": _PYTHON,
    "profile.run": _PYTHON,
    "profile.runctx": _PYTHON,
    "pdb.run": _PYTHON,
    "pdb.runeval": _PYTHON,
    "pdb.runcall": "calls any function under a debugger",
    "bdb.Bdb.run": _PYTHON,
    "trace.Trace.run": _PYTHON,
    "doctest.debug_script": _PYTHON,
    "pydoc.pipepager": _SHELL,
    "pydoc.tempfilepager": _SHELL,
    "uuid._get_command_stdout": _PROCESS,
    "_osx_support._read_output": _SHELL,
    "_osx_support._find_build_tool": _SHELL,
    "_aix_support._read_cmd_output": _SHELL,
    "logging.config.listen": "listens on a socket for configuration that runs code",
    "logging.config.fileConfig": "reads configuration that imports and calls names",
    "logging.config.dictConfig": "imports and calls names from configuration",
    "pkgutil.resolve_name": _IMPORT,
    "sys.modules": "replaces modules other code imports",
    "sys.path": "changes where modules are imported from",
}

# modules (and every module below them) whose globals are gadgets
_MODULES: dict[str, str] = {
    "os": "operating-system calls: processes, files, environment",
    "posix": "operating-system calls: processes, files, environment",
    "nt": "operating-system calls: processes, files, environment",
    "subprocess": _PROCESS,
    "_posixsubprocess": _PROCESS,
    "pty": "starts a process on a terminal",
    "commands": _SHELL,
    "popen2": _SHELL,
    "pexpect": _PROCESS,
    "pipes": _SHELL,
    "multiprocessing": _PROCESS,
    "asyncio.subprocess": _PROCESS,
    "runpy": "runs a Python module or file",
    "code": _PYTHON,
    "codeop": "compiles Python code",
    "importlib": _IMPORT,
    "_frozen_importlib": _IMPORT,
    "_frozen_importlib_external": _IMPORT,
    "_imp": _IMPORT,
    "imp": _IMPORT,
    "zipimport": _IMPORT,
    "pickle": _NESTED,
    "_pickle": _NESTED,
    "cPickle": _NESTED,
    "dill": _NESTED,
    "cloudpickle": _NESTED,
    "joblib": _NESTED,
    "shelve": _NESTED,
    "marshal": "loads raw Python bytecode",
    "shutil": "copies, moves or deletes files",
    "tempfile": _FILES,
    "socket": _NET,
    "_socket": _NET,
    "socketserver": _NET,
    "ssl": _NET,
    "http": _NET,
    "httplib": _NET,
    "urllib": _NET,
    "urllib2": _NET,
    "urllib3": _NET,
    "requests": _NET,
    "aiohttp": _NET,
    "ftplib": _NET,
    "smtplib": _NET,
    "imaplib": _NET,
    "poplib": _NET,
    "telnetlib": _NET,
    "nntplib": _NET,
    "xmlrpc": _NET,
    "webbrowser": "opens a URL in a web browser",
    "ctypes": _NATIVE,
    "_ctypes": _NATIVE,
    "cffi": _NATIVE,
    "_interpreters": "runs code in a new interpreter",
    "_xxsubinterpreters": "runs code in a new interpreter",
    "sys": "changes the interpreter (modules, import path, hooks)",
    "signal": "changes signal handling",
    "atexit": "runs a function when the interpreter exits",
    "threading": "runs a function on a new thread",
    "_thread": "runs a function on a new thread",
    "inspect": _ATTR,
    "gc": "reaches every live object",
    "site": "changes the import path",
    "venv": "creates environments and installs packages",
    "ensurepip": "installs packages",
    "pip": "installs packages",
    "distutils": "runs build commands",
    "setuptools": "runs build commands",
    "idlelib": _PYTHON,
    "compileall": "compiles and writes Python files",
    "py_compile": "compiles and writes Python files",
    "torch.hub": "downloads and runs code from the network",
    "torch._dynamo": "compiles and runs generated code",
    "torch._inductor": "compiles and runs generated code",
    "torch.utils.cpp_extension": "compiles and loads native code",
    "torch.multiprocessing": _PROCESS,
    "numpy.f2py": "compiles and loads native code",
    "numpy.distutils": "runs build commands",
    "numpy.ctypeslib": _NATIVE,
}


def explain(name: str) -> str | None:
    """What ``name`` (a dotted global, as the scanner resolves it) does when a pickle calls it,
    when it is a known code-execution gadget; None for a name that is only not allowed."""
    found = _NAMES.get(name)
    if found is not None:
        return found
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        found = _MODULES.get(".".join(parts[:end]))
        if found is not None:
            return found
    for start in range(1, len(parts) - 1):  # an attribute path that ends in a gadget
        found = _NAMES.get(".".join(parts[start:]))
        if found is not None:
            return found
    return None


def describe(name: str) -> str:
    """``": a known code-execution gadget (...)"`` for a gadget, else ``""``: the text MG901
    appends to what a pickle does with ``name``."""
    found = explain(name)
    return f": a known code-execution gadget ({found})" if found else ""
