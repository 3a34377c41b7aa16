"""Suite-wide checks.

Every object the test suite compiles through `kiln.codegen.build_object` is checked against the
object-code contract (docs/object-code.md, "How the contract is tested"): allowed external
symbols and relocation types only, no static constructors or TLS sections, and the runtime's own
validator (`kiln.runtime.elf.inspect_elf_object`) accepts it. Violations are collected and make
the session fail at the end, whatever test produced them.
"""

from __future__ import annotations

import pytest

_FORBIDDEN_SECTION_PREFIXES = (".init_array", ".fini_array", ".preinit_array", ".ctors", ".dtors",
                               ".tdata", ".tbss")

_checked: list[int] = []
_violations: list[str] = []


def object_contract_violations(blob: bytes) -> list[str]:
    """Every way `blob` breaks the object-code contract (empty if it complies)."""
    from kiln.codegen.target import (
        CONTRACT_RELOCATION_TYPES,
        elf_relocation_types,
        elf_section_names,
        object_external_symbols,
    )
    from kiln.errors import ArtifactError
    from kiln.runtime.elf import ALLOWED_EXTERNAL_SYMBOLS, inspect_elf_object

    out = []
    bad_syms = object_external_symbols(blob) - ALLOWED_EXTERNAL_SYMBOLS
    if bad_syms:
        out.append(f"undefined symbols outside ALLOWED_EXTERNAL_SYMBOLS: {sorted(bad_syms)}")
    machine = int.from_bytes(blob[18:20], "little")     # e_machine: x86-64 or aarch64
    bad_relocs = elf_relocation_types(blob) - CONTRACT_RELOCATION_TYPES.get(machine, frozenset())
    if bad_relocs:
        out.append(f"relocation types outside CONTRACT_RELOCATION_TYPES[{machine}]: {sorted(bad_relocs)}")
    bad_secs = [s for s in elf_section_names(blob) if s.startswith(_FORBIDDEN_SECTION_PREFIXES)]
    if bad_secs:
        out.append(f"forbidden sections: {bad_secs}")
    try:
        inspect_elf_object(blob, machines=frozenset(CONTRACT_RELOCATION_TYPES))
    except ArtifactError as e:
        out.append(f"inspect_elf_object refuses it: {e}")
    return out


@pytest.fixture(scope="session", autouse=True)
def _check_every_compiled_object():
    """Wrap kiln.codegen.build_object for the whole session (kiln/driver/compile.py looks it up on
    kiln.codegen at each compile, so patching the package attribute catches every compile; test
    modules that imported the name directly are patched too)."""
    import sys

    import kiln.codegen

    original = kiln.codegen.build_object

    def checked_build_object(*args, **kwargs):
        obj = original(*args, **kwargs)
        _checked.append(len(obj.blob))
        problems = object_contract_violations(obj.blob)
        if problems:
            names = sorted(getattr(k.kernel, "name", "?") for k in (args[0] if args else kwargs.get("kernels", ())))
            _violations.append(f"object for {names}: " + "; ".join(problems))
        return obj

    patched = []
    for mod in [kiln.codegen, *(m for n, m in list(sys.modules.items()) if n.startswith(("tests.", "test_")))]:
        if getattr(mod, "build_object", None) is original:
            mod.build_object = checked_build_object
            patched.append(mod)
    yield
    for mod in patched:
        mod.build_object = original


#: outcomes of the C runtime tests per architecture they ran on ("native", "aarch64" under
#: qemu-user): CI's output says what each one did (issue 18 asks to see both)
_c_runtime: dict[str, dict[str, int]] = {}


def pytest_runtest_logreport(report):
    if not report.nodeid.startswith("tests/test_c_runtime") or "[" not in report.nodeid:
        return
    params = report.nodeid.rsplit("[", 1)[1].rstrip("]").split("-")
    arch = "aarch64" if "aarch64" in params else "native" if "native" in params else None
    if arch is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "error" if report.when == "setup" and report.failed else report.outcome
        counts = _c_runtime.setdefault(arch, {})
        counts[outcome] = counts.get(outcome, 0) + 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    terminalreporter.write_line(
        f"object-code contract: checked {len(_checked)} compiled object(s), {len(_violations)} violation(s)")
    for arch, counts in sorted(_c_runtime.items()):
        where = "aarch64 under qemu-user" if arch == "aarch64" else "this machine (native)"
        terminalreporter.write_line(f"C runtime tests built for and run on {where}: " + ", ".join(
            f"{n} {what}" for what, n in sorted(counts.items())))
    for v in _violations:
        terminalreporter.write_line(f"  CONTRACT VIOLATION: {v}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if _violations and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_configure(config):
    """The IR verifier runs after every pass in the test suite (kiln.driver.pipeline), and the
    on-disk compile cache is off (every test compiles, whatever ran before it; the cache's own
    tests turn it on with a private folder): set before kiln.config is first read, and in the
    environment so that subprocesses inherit it."""
    import os
    import tempfile

    os.environ["KILN_VERIFY"] = "1"
    os.environ["KILN_CACHE"] = "0"
    os.environ["KILN_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"kiln-test-cache-{os.getpid()}")
