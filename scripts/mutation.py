"""Mutation testing for a few modules: does the suite fail when the code is wrong?

Each mutant is the real module with one change: an operator (``+``/``-``, ``<``/``<=``,
``and``/``or``, ``not x`` -> ``x``, ``min``/``max``...), a constant (a number ``n`` -> ``n + 1``,
``True``/``False``, a string ``s`` -> ``"XX" + s + "XX"``) or a statement (-> ``pass``). It is
run against the tests that execute the mutated line, and counts as *killed* when one of them
fails (or the run times out), *survived* when they all pass, *not covered* when no test runs
that line. Score = killed / all mutants.

Usage (from the repository root, with the project's venv active)::

    python scripts/mutation.py keys retry          # presets, see PRESETS below
    python scripts/mutation.py src/ipfs_accelerate_api/engine/keys.py --tests tests/api
    python scripts/mutation.py transport --list    # the mutants, nothing run
    python scripts/mutation.py keys --mutant 17    # run one mutant and show its diff
    python scripts/mutation.py keys --json out.json

Options: ``--only NAME`` restricts mutants to functions/classes named NAME, or a dotted path
such as ``Transport.request`` (repeatable);
``--pure`` runs with ``IPFS_ACCEL_NO_EXTENSIONS=1`` and without the ``c_extension`` tests
(for the pure twins of the core); ``--timeout S`` caps one mutant's run (default: three times
a clean run of the tests it needs, at least 20 s); ``--root DIR`` mutates and tests another
checkout (e.g. an older commit exported with ``git archive``, its compiled ``.so`` copied in).

How it works: ``src/`` is copied to a temporary directory, which goes first on
``PYTHONPATH``; the working tree is never modified. A first pytest run over the chosen test
files traces (``sys.settrace``, all threads) which test executes which line of the module.
Then each mutant is written into the copy and pytest runs, with ``-x -p no:cacheprovider``,
only the tests that executed the mutated statement (its enclosing function's callers for a
mutant in a signature; every chosen test for module-level code). Tests marked ``slow`` are
left out. One mutant at a time: this is meant to share a small machine.

Not mutated (changing them is not a behaviour a test should pin): docstrings, ``__all__``,
imports, type annotations, f-strings, the text of exceptions being raised, and logging calls.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PKG = "src/ipfs_accelerate_api"

#: name -> (module path below the root, test paths, functions/classes only, pure twin).
#: The test paths are the files that pin the module (a mutant runs only the tests among them
#: that execute its line); ``--tests`` replaces them.
_API = "tests/api"
PRESETS: dict[str, tuple[str, list[str], list[str], bool]] = {
    "keys": (f"{PKG}/engine/keys.py",
             [f"{_API}/{f}.py" for f in ("test_keys", "test_engine", "test_resilience",
                                          "test_retry_rules", "test_openai_backend")], [], False),
    "retry": (f"{PKG}/engine/retry.py",
              [f"{_API}/{f}.py" for f in ("test_retry_rules", "test_units", "test_keys",
                                           "test_engine", "test_resilience")], [], False),
    "config": (f"{PKG}/config.py",
               [f"{_API}/{f}.py" for f in ("test_credentials", "test_retry_rules", "test_units",
                                            "test_hardening", "test_openai_backend")], [], False),
    "transport": (f"{PKG}/transport.py",
                  [f"{_API}/{f}.py" for f in ("test_transport_readers", "test_units",
                                               "test_hardening", "test_resilience",
                                               "test_openai_backend", "test_async_stream")],
                  ["Transport.request", "_lines", "_decode", "iter_sse", "iter_ndjson",
                   "SSEEvent", "Response.json"], False),
    "ratelimit": (f"{PKG}/core/_pure/ratelimit.py",
                  ["tests/core", *(f"{_API}/{f}.py" for f in ("test_keys", "test_engine",
                                                               "test_resilience"))], [], True),
    "breaker": (f"{PKG}/core/_pure/breaker.py",
                ["tests/core", *(f"{_API}/{f}.py" for f in ("test_engine", "test_resilience",
                                                             "test_retry_rules"))], [], True),
}

PYTEST_BASE = ["-p", "no:cacheprovider", "-q", "--no-header"]


# -- mutants ------------------------------------------------------------------------------

@dataclass
class Mutant:
    index: int
    line: int  # the line whose execution selects the tests
    scope: str  # "line", "call" (signature of a function starting at `line`) or "module"
    what: str
    start: tuple[int, int]  # (line, col) of the replaced text, col in characters
    end: tuple[int, int]
    replacement: str
    status: str = ""
    tests: int = 0
    seconds: float = 0.0
    failed: str = ""


_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
               ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
               ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr, ast.LShift: ast.RShift,
               ast.RShift: ast.LShift}
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
             ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
             ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_NAME_SWAP = {"min": "max", "max": "min"}
_LOG_NAMES = {"log", "logger", "logging"}


class _Finder(ast.NodeVisitor):
    """Collects every mutation site: (node, replacement text, description, statement, scope)."""

    def __init__(self, only: set[str]) -> None:
        self.only = only
        self.found: list[tuple[ast.AST, str, str, ast.stmt | None, str]] = []
        self._stmt: list[ast.stmt] = []
        self._func: list[ast.AST] = []
        self._names: list[str] = []
        self._in_raise = 0

    def _selected(self) -> bool:
        """Inside one of ``only``: a name, or a dotted path (``Transport.request``)."""
        for o in self.only:
            parts = o.split(".")
            if any(self._names[i:i + len(parts)] == parts for i in range(len(self._names))):
                return True
        return not self.only

    def _add(self, node: ast.AST, new: str, what: str, stmt: ast.stmt | None = None) -> None:
        if not self._selected():
            return
        stmt = stmt or (self._stmt[-1] if self._stmt else None)
        func = self._func[-1] if self._func else None
        # A default or decorator is evaluated with the def: its tests are the callers.
        scope = "module" if func is None else ("call" if stmt is func else "line")
        self.found.append((node, new, what, stmt, scope))

    def generic_visit(self, node: ast.AST) -> None:
        for name, value in ast.iter_fields(node):
            if name in ("annotation", "returns", "type_comment"):
                continue
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if not isinstance(item, ast.AST):
                    continue
                if name == "body" and i == 0 and _is_docstring_stmt(item):
                    continue
                if isinstance(item, ast.stmt):
                    self._stmt.append(item)
                    self.visit(item)
                    self._stmt.pop()
                else:
                    self.visit(item)

    # -- what is left alone -----------------------------------------------------------------
    def visit_Import(self, node: ast.AST) -> None:
        return

    visit_ImportFrom = visit_Import

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # f-strings are messages (and positions inside them are unreliable)

    def visit_Expr(self, node: ast.Expr) -> None:
        if _is_log_call(node.value):
            return
        self._add(node, "pass", "statement -> pass")
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        self._add(node, "pass", "statement -> pass")
        self.generic_visit(node)

    # -- scopes -----------------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._names.append(node.name)
        self._func.append(node)
        self.generic_visit(node)
        self._func.pop()
        self._names.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._names.append(node.name)
        self.generic_visit(node)
        self._names.pop()

    # -- statements ---------------------------------------------------------------------------
    def visit_Raise(self, node: ast.Raise) -> None:
        self._add(node, "pass", "statement -> pass")
        self._in_raise += 1
        self.generic_visit(node)
        self._in_raise -= 1

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._add(node, "pass", "statement -> pass")
        swap = _BINOP_SWAP.get(type(node.op))
        if swap is not None:
            new = ast.AugAssign(target=node.target, op=swap(), value=node.value)
            self._add(node, ast.unparse(new), f"{_op(node.op)}= -> {_op(swap())}=")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._add(node, "pass", "statement -> pass")
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None and not (isinstance(node.value, ast.Constant)
                                           and node.value.value is None):
            self._add(node, "return None", "return value -> None")
        self.generic_visit(node)

    def visit_Continue(self, node: ast.stmt) -> None:
        self._add(node, "pass", f"{type(node).__name__.lower()} -> pass")

    visit_Break = visit_Continue

    # -- expressions --------------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> None:
        swap = _BINOP_SWAP.get(type(node.op))
        if swap is not None:
            new = ast.BinOp(left=node.left, op=swap(), right=node.right)
            self._add(node, f"({ast.unparse(new)})", f"{_op(node.op)} -> {_op(swap())}")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for i, op in enumerate(node.ops):
            swap = _CMP_SWAP.get(type(op))
            if swap is not None:
                ops = list(node.ops)
                ops[i] = swap()
                new = ast.Compare(left=node.left, ops=ops, comparators=node.comparators)
                self._add(node, f"({ast.unparse(new)})", f"{_op(op)} -> {_op(swap())}")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        swap = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        new = ast.BoolOp(op=swap, values=node.values)
        self._add(node, f"({ast.unparse(new)})", f"{_op(node.op)} -> {_op(swap)}")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, (ast.Not, ast.USub)):
            self._add(node, f"({ast.unparse(node.operand)})", f"{_op(node.op)}x -> x")
        if not (isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)):
            self.generic_visit(node)  # -1 is one constant, not a negated 1 -> 2

    def visit_IfExp(self, node: ast.IfExp) -> None:
        new = ast.IfExp(test=ast.UnaryOp(op=ast.Not(), operand=node.test), body=node.body,
                        orelse=node.orelse)
        self._add(node, f"({ast.unparse(new)})", "a if c else b -> a if not c else b")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if _is_log_call(node):
            return
        if isinstance(node.func, ast.Name) and node.func.id in _NAME_SWAP:
            swap = _NAME_SWAP[node.func.id]
            self._add(node.func, swap, f"{node.func.id} -> {swap}")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, bool):
            self._add(node, repr(not v), f"{v} -> {not v}")
        elif isinstance(v, (int, float)):
            self._add(node, repr(v + 1), f"{v!r} -> {v + 1!r}")
        elif isinstance(v, (str, bytes)) and not self._in_raise:
            new = ("XX" + v + "XX") if isinstance(v, str) else (b"XX" + v + b"XX")
            self._add(node, repr(new), f"{_short(repr(v))} -> {_short(repr(new))}")


def _is_log_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in _LOG_NAMES)


def _is_docstring_stmt(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and \
        isinstance(node.value.value, str)


def _op(op: ast.AST) -> str:
    return {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
            ast.Mod: "%", ast.Pow: "**", ast.BitOr: "|", ast.BitAnd: "&", ast.LShift: "<<",
            ast.RShift: ">>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
            ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
            ast.IsNot: "is not", ast.And: "and", ast.Or: "or", ast.Not: "not ",
            ast.USub: "-"}[type(op)]


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _char_col(lines: list[str], line: int, byte_col: int) -> int:
    return len(lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8"))


def find_mutants(source: str, only: set[str]) -> list[Mutant]:
    tree = ast.parse(source)
    finder = _Finder(only)
    finder.visit(tree)
    lines = source.splitlines(keepends=True)
    mutants = []
    for node, new, what, stmt, scope in finder.found:
        start = (node.lineno, _char_col(lines, node.lineno, node.col_offset))
        end = (node.end_lineno, _char_col(lines, node.end_lineno, node.end_col_offset))
        if scope == "call":
            func = stmt
            line = func.decorator_list[0].lineno if func.decorator_list else func.lineno
        else:
            line = stmt.lineno if stmt is not None else node.lineno
        mutants.append(Mutant(len(mutants), line, scope, what, start, end, new))
    return mutants


def apply(source: str, m: Mutant) -> str:
    lines = source.splitlines(keepends=True)
    (l1, c1), (l2, c2) = m.start, m.end
    head = "".join(lines[: l1 - 1]) + lines[l1 - 1][:c1]
    tail = lines[l2 - 1][c2:] + "".join(lines[l2:])
    return head + m.replacement + tail


def diff_line(source: str, m: Mutant) -> str:
    old = source.splitlines()[m.start[0] - 1].strip()
    new = apply(source, m).splitlines()[m.start[0] - 1].strip()
    return f"{_short(old, 90)}  =>  {_short(new, 90)}"


# -- the tracing plugin (loaded into the first pytest run with -p mutation) ---------------

_TRACE_FILE = os.environ.get("MUTATION_TRACE_FILE")
_current: list[str] = ["<import>"]
_hits: dict[str, set[tuple[str, int]]] = {}


def _tracer(frame: Any, event: str, arg: Any) -> Any:
    if event != "call" or frame.f_code.co_filename != _TRACE_FILE:
        return None
    _hits.setdefault(_current[0], set()).add(("call", frame.f_code.co_firstlineno))

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            _hits.setdefault(_current[0], set()).add(("line", frame.f_lineno))
        return local

    return local


def pytest_configure(config: Any) -> None:
    if _TRACE_FILE:
        sys.settrace(_tracer)
        threading.settrace(_tracer)


def pytest_runtest_protocol(item: Any, nextitem: Any) -> None:
    _current[0] = item.nodeid


def pytest_runtest_logreport(report: Any) -> None:
    if _TRACE_FILE:  # setup + call + teardown
        _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


_durations: dict[str, float] = {}


def pytest_unconfigure(config: Any) -> None:
    if not _TRACE_FILE:
        return
    sys.settrace(None)
    threading.settrace(None)  # type: ignore[arg-type]
    out = {"hits": {t: sorted(h) for t, h in _hits.items()}, "durations": _durations}
    with open(os.environ["MUTATION_TRACE_OUT"], "w") as fh:
        json.dump(out, fh)


# -- running ------------------------------------------------------------------------------

@dataclass
class Target:
    module: Path  # absolute, in the checkout
    tests: list[str]
    only: set[str] = field(default_factory=set)
    pure: bool = False


class Runner:
    def __init__(self, root: Path, workdir: Path, verbose: bool) -> None:
        self.root = root
        self.work = workdir
        self.verbose = verbose
        shutil.copytree(root / "src", workdir / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        self.cwd = workdir / "cwd"  # pytest runs here: .hypothesis and the like stay out of the tree
        self.cwd.mkdir()

    def env(self, target: Target, trace: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.work / "src"), str(Path(__file__).parent)])
        env.pop("MUTATION_TRACE_FILE", None)
        if trace is not None:
            env["MUTATION_TRACE_FILE"] = str(self.copy_of(target.module))
            env["MUTATION_TRACE_OUT"] = str(trace)
        if target.pure:
            env["IPFS_ACCEL_NO_EXTENSIONS"] = "1"
        return env

    def copy_of(self, module: Path) -> Path:
        return self.work / module.relative_to(self.root)

    def pytest(self, target: Target, args: list[str], env: dict[str, str],
               timeout: float | None) -> tuple[int | None, str, float]:
        marker = ["-m", "not slow and not c_extension" if target.pure else "not slow"]
        cmd = [sys.executable, "-m", "pytest", "--rootdir", str(self.root),
               "-c", str(self.root / "pyproject.toml"), *PYTEST_BASE, *marker, *args]
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=self.cwd, env=env, capture_output=True, text=True,
                               timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return None, "", time.monotonic() - t0
        return p.returncode, p.stdout + p.stderr, time.monotonic() - t0

    def trace(self, target: Target) -> tuple[dict[tuple[str, int], list[str]], dict[str, float]]:
        out = self.work / "trace.json"
        tests = [str(self.root / t) for t in target.tests]
        rc, text, secs = self.pytest(target, ["-p", "mutation", *tests], self.env(target, out),
                                     None)
        if rc != 0:
            raise SystemExit(f"the unmutated tests do not pass (rc={rc}):\n{text[-3000:]}")
        data = json.loads(out.read_text())
        by_line: dict[tuple[str, int], list[str]] = {}
        for test, hits in data["hits"].items():
            for kind, line in hits:
                by_line.setdefault((kind, line), []).append(test)
        if not any(t != "<import>" for ts in by_line.values() for t in ts):
            raise SystemExit(f"no test executed {target.module} (is the copy on the path?)")
        print(f"  traced {len(data['durations'])} tests in {secs:.0f}s", flush=True)
        return by_line, data["durations"]

    def run(self, target: Target, mutants: list[Mutant], timeout: float | None,
            on_done: Any = None) -> None:
        source = target.module.read_text()
        copy = self.copy_of(target.module)
        by_line, durations = self.trace(target)
        every = sorted({t for ts in by_line.values() for t in ts if t != "<import>"},
                       key=lambda t: durations.get(t, 0.0))
        env = self.env(target)
        stamp = copy.stat().st_mtime
        try:
            for i, m in enumerate(mutants):
                if m.scope == "module":
                    tests = every
                else:
                    tests = [t for t in by_line.get((m.scope, m.line), []) if t != "<import>"]
                    tests.sort(key=lambda t: durations.get(t, 0.0))
                m.tests = len(tests)
                if not tests:
                    m.status = "not covered"
                else:
                    limit = timeout or max(20.0, 3 * sum(durations.get(t, 1.0) for t in tests) + 10)
                    copy.write_text(apply(source, m))
                    stamp += 2  # a new mtime: never a stale .pyc of an earlier mutant
                    os.utime(copy, (stamp, stamp))
                    ids = [str(self.root / t) for t in tests]
                    rc, text, m.seconds = self.pytest(target, ["-x", *ids], env, limit)
                    if rc == 5:  # nothing collected: the test ids are wrong, not the mutant
                        raise SystemExit(f"pytest could not run mutant #{m.index}:\n{text[-3000:]}")
                    if rc is None:
                        m.status = "killed (timeout)"
                    elif rc == 0:
                        m.status = "survived"
                    else:  # a failure, or the package no longer imports (rc 2-4)
                        m.status = "killed"
                        m.failed = f"rc={rc} {_first_failure(text)}"
                if on_done:
                    on_done(i, m)
        finally:
            copy.write_text(source)
            os.utime(copy, (stamp + 2, stamp + 2))


def _first_failure(text: str) -> str:
    for line in text.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0][:160]
    return text.strip().splitlines()[-1][:160] if text.strip() else ""


def _targets(args: argparse.Namespace, root: Path) -> list[tuple[str, Target]]:
    out = []
    for name in args.modules:
        if name in PRESETS:
            path, tests, only, pure = PRESETS[name]
            t = Target(root / path, args.tests or tests, set(args.only or only),
                       args.pure or pure)
        else:
            t = Target((root / name).resolve(), args.tests or ["tests"], set(args.only or []),
                       args.pure)
        out.append((name, t))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="+", help="preset names or module paths")
    ap.add_argument("--tests", action="append", help="test paths (default: the preset's)")
    ap.add_argument("--only", action="append", help="mutate only inside this function/class")
    ap.add_argument("--pure", action="store_true", help="force the pure twins")
    ap.add_argument("--timeout", type=float, help="seconds for one mutant's run")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to mutate and test")
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    ap.add_argument("--mutant", type=int, action="append", help="run only these indices")
    ap.add_argument("--json", type=Path, help="write every mutant's outcome here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every mutant")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    report: dict[str, Any] = {}
    for name, target in _targets(args, root):
        source = target.module.read_text()
        mutants = find_mutants(source, target.only)
        rel = target.module.relative_to(root)
        if args.list:
            for m in mutants:
                print(f"{name} #{m.index} L{m.start[0]} [{m.scope}] {m.what}: {diff_line(source, m)}")
            continue
        chosen = [m for m in mutants if args.mutant is None or m.index in args.mutant]
        print(f"{rel}: {len(chosen)} mutants", flush=True)

        def done(i: int, m: Mutant, source: str = source, chosen: list = chosen) -> None:
            if args.verbose or m.status in ("survived", "not covered") or args.mutant:
                print(f"  #{m.index} L{m.start[0]} {m.status}: {m.what}: {diff_line(source, m)}"
                      + (f" [{m.failed}]" if m.failed and (args.verbose or args.mutant) else ""),
                      flush=True)
            elif (i + 1) % 25 == 0:
                print(f"  ... {i + 1}/{len(chosen)}", flush=True)

        with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
            Runner(root, Path(tmp), args.verbose).run(target, chosen, args.timeout, done)
        killed = sum(m.status.startswith("killed") for m in chosen)
        score = 100.0 * killed / len(chosen) if chosen else 100.0
        survivors = [m for m in chosen if not m.status.startswith("killed")]
        print(f"{rel}: {killed}/{len(chosen)} killed = {score:.1f}% "
              f"({sum(m.status == 'survived' for m in chosen)} survived, "
              f"{sum(m.status == 'not covered' for m in chosen)} not covered)", flush=True)
        report[name] = {"module": str(rel), "score": score, "killed": killed,
                        "total": len(chosen),
                        "survivors": [dict(asdict(m), diff=diff_line(source, m))
                                      for m in survivors],
                        "mutants": [asdict(m) for m in chosen]}
        if args.json:  # after every module: a long run that stops keeps what it measured
            args.json.write_text(json.dumps(report, indent=1))
    if len(report) > 1:
        for name, r in report.items():
            print(f"{r['module']}: {r['score']:.1f}% ({r['killed']}/{r['total']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
