"""The ABI coupling report (``pvframe abi``): how much of a hypervisor's interface leaks
through ``paravirt_ops`` (docs/abi-coupling.md).

Three measurements, each from the real mechanism rather than from a hand-written list:

* **Implemented versus inherited** ops per backend, from :func:`pvframe.plugins.discover`.
* **Hypervisor calls per hook**, measured: the guests run on the backend with a
  :class:`pvframe.tools.trace.Tracer` registered as a pluggy wrapper, which charges the change of
  the backend's ``run_report(machine)["hypercalls"]`` counts to the hook that was executing.
  A backend without such a report has no hypercalls to attribute (shown as such).
* **Units crossing the interface** per op (the catalogue's ``units``) and where each
  backend converts them: the :mod:`pvframe.timekeeping.units` functions its implementation
  calls, found in the implementation's source (one level of ``self._helper()`` calls
  followed), or ``inline`` when it scales by a power of ten itself.
* **Call sites** (a static scan): the image's executable code decoded with iced-x86 and every
  privileged instruction mapped to the hook the executor would call for it, following the
  routing table of docs/architecture.md. The classic figure of the debate is the number of
  such sites in a kernel against the number of hooks: every site is an ABI use, while the
  interface has fewer than 100 entries.
* **Paravirt call sites** per op, for a guest that calls the ops (docs/pvcalls.md): the
  image's ``.parainstructions`` records (Linux 2.6.23 layout) and its indirect
  ``call``/``jmp`` through the ops table (the image's ``paravirt_ops`` symbol or the call
  ROM's table), one site per instruction; at run time, the calls that reached the call ROM
  per op (:attr:`BackendReport.pvcalls`) and the hypercalls each op caused.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import iced_x86 as x86

from pvframe import catalogue, plugins
from pvframe.hookspecs import PREFIX
from pvframe.pvcall import layout, patching

# ------------------------------------------------------------------------ static scan

APIC_BASE, APIC_END = 0xFEE00000, 0xFEE01000
IO_DELAY_PORT = 0x80

#: instruction code -> hook (docs/architecture.md, "Executor -> hook routing")
_C = x86.Code
ROUTING: dict[int, str] = {
    _C.CLI: "irq_disable",
    _C.STI: "irq_enable",
    _C.PUSHFD: "save_fl", _C.PUSHFW: "save_fl",
    _C.POPFD: "restore_fl", _C.POPFW: "restore_fl",
    _C.HLT: "halt",
    _C.CLTS: "clts",
    _C.WBINVD: "wbinvd", _C.INVD: "wbinvd",
    _C.INVLPG_M: "flush_tlb_single",
    _C.LGDT_M1632: "load_gdt", _C.LGDT_M1632_16: "load_gdt",
    _C.LIDT_M1632: "load_idt", _C.LIDT_M1632_16: "load_idt",
    _C.SGDT_M1632: "store_gdt", _C.SGDT_M1632_16: "store_gdt",
    _C.SIDT_M1632: "store_idt", _C.SIDT_M1632_16: "store_idt",
    _C.LLDT_RM16: "set_ldt", _C.LLDT_R32M16: "set_ldt",
    _C.LTR_RM16: "load_tr_desc", _C.LTR_R32M16: "load_tr_desc",
    _C.STR_RM16: "store_tr", _C.STR_R32M16: "store_tr",
    _C.RDMSR: "read_msr", _C.WRMSR: "write_msr",
    _C.RDTSC: "read_tsc", _C.RDPMC: "read_pmc",
    _C.CPUID: "cpuid",
    _C.IRETD: "iret",
}
_CR_REGS = {x86.Register.CR0: 0, x86.Register.CR2: 2, x86.Register.CR3: 3, x86.Register.CR4: 4}
_DR_REGS = {getattr(x86.Register, f"DR{i}") for i in range(8)}
_OUT_IMM = {_C.OUT_IMM8_AL, _C.OUT_IMM8_AX, _C.OUT_IMM8_EAX}
_PORT_IO = {
    _C.IN_AL_IMM8, _C.IN_AX_IMM8, _C.IN_EAX_IMM8, _C.IN_AL_DX, _C.IN_AX_DX, _C.IN_EAX_DX,
    _C.OUT_DX_AL, _C.OUT_DX_AX, _C.OUT_DX_EAX, _C.INSB_M8_DX, _C.INSW_M16_DX,
    _C.INSD_M32_DX, _C.OUTSB_DX_M8, _C.OUTSW_DX_M16, _C.OUTSD_DX_M32,
} | _OUT_IMM
_WRITES = {x86.OpAccess.WRITE, x86.OpAccess.READ_WRITE, x86.OpAccess.COND_WRITE,
           x86.OpAccess.READ_COND_WRITE}
_READS = {x86.OpAccess.READ, x86.OpAccess.READ_WRITE, x86.OpAccess.COND_READ,
          x86.OpAccess.READ_COND_WRITE}


class ScanError(Exception):
    """The image cannot be scanned; the message is one line with what to do."""


@attrs.frozen
class StaticScan:
    """Privileged-operation call sites of one image, per hook."""

    image: str
    code_bytes: int
    instructions: int
    sites: dict[str, int]
    port_io_sites: int
    #: paravirt call sites per op (``.parainstructions`` and indirect calls through the
    #: ops table, one per instruction)
    pv_sites: dict[str, int] = attrs.field(factory=dict)
    #: records in ``.parainstructions``; indirect calls through the table outside them
    pv_recorded: int = 0
    pv_unrecorded: int = 0

    @property
    def total_sites(self) -> int:
        return sum(self.sites.values())

    @property
    def distinct_hooks(self) -> int:
        return len(self.sites)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image, "code_bytes": self.code_bytes,
            "instructions": self.instructions, "total_sites": self.total_sites,
            "distinct_hooks": self.distinct_hooks,
            "interface_hooks": len(catalogue.CATALOGUE),
            "sites": dict(sorted(self.sites.items(), key=lambda kv: (-kv[1], kv[0]))),
            "port_io_sites": self.port_io_sites,
            "pv_call_sites": dict(sorted(self.pv_sites.items(), key=lambda kv: (-kv[1], kv[0]))),
            "pv_ops_with_sites": len(self.pv_sites),
            "pv_recorded_sites": self.pv_recorded,
            "pv_unrecorded_indirect_calls": self.pv_unrecorded,
        }


def code_regions(data: bytes, raw_load_addr: int | None = None) -> list[tuple[int, bytes]]:
    """``(address, bytes)`` of the executable code of an image.

    ELF: the sections flagged executable (``SHF_EXECINSTR``) when the file has a section
    table, else the executable ``PT_LOAD`` segments; a multiboot header at the start of a
    region is skipped (it is data). Raw images (``raw_load_addr`` given, or not an ELF file):
    the whole image."""
    if data[:4] != b"\x7fELF" or raw_load_addr is not None:
        return [(raw_load_addr or 0, data)]
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        regions = [
            (int(s["sh_addr"]), s.data())
            for s in elf.iter_sections()
            if s["sh_flags"] & 0x4 and s["sh_type"] == "SHT_PROGBITS"
        ]
        if not regions:
            regions = [
                (int(seg["p_vaddr"]), seg.data())
                for seg in elf.iter_segments()
                if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & 0x1
            ]
    except (ELFError, ValueError) as exc:
        raise ScanError(f"not a readable ELF file ({exc}); give --raw for a raw image") from None
    if elf["e_machine"] != "EM_386":
        raise ScanError(f"ELF machine is {elf['e_machine']}, not EM_386; pvframe scans i386 code")
    return [_skip_multiboot(addr, code) for addr, code in regions]


def _skip_multiboot(addr: int, code: bytes) -> tuple[int, bytes]:
    if len(code) >= 12 and int.from_bytes(code[:4], "little") == 0x1BADB002:
        flags = int.from_bytes(code[4:8], "little")
        size = 32 if flags & (1 << 16) else 12
        return addr + size, code[size:]
    return addr, code


def scan(data: bytes, name: str = "image", raw_load_addr: int | None = None) -> StaticScan:
    """Count the call sites of every hook in the image's code (a linear sweep: bytes of data
    inside executable sections may decode as instructions; the guests keep data apart)."""
    sites: Counter[str] = Counter()
    port_io = 0
    decoded = 0
    size = 0
    info = x86.InstructionInfoFactory()
    tables = _ops_tables(data) if raw_load_addr is None else [(layout.TABLE_ADDR, 4 * layout.NR_SLOTS)]
    indirect: list[tuple[int, str]] = []
    for addr, code in code_regions(data, raw_load_addr):
        size += len(code)
        previous = None
        for ins in x86.Decoder(32, code, ip=addr):
            decoded += 1
            op = _route(ins, previous, info)
            for hook in op:
                sites[hook] += 1
            if ins.code in _PORT_IO and not (
                ins.code in _OUT_IMM and ins.immediate8 == IO_DELAY_PORT
            ):
                port_io += 1
            through = _through_table(ins, tables)
            if through is not None:
                indirect.append((ins.ip, through))
            previous = ins.code
    try:
        recorded = [] if raw_load_addr is not None else patching.read_sites(data)
    except patching.PatchError as exc:
        raise ScanError(str(exc)) from None
    pv: Counter[str] = Counter(s.op or f"type {s.type_}" for s in recorded)
    spans = sorted((s.instr, s.instr + s.len_) for s in recorded)
    unrecorded = [op for ip, op in indirect if not any(lo <= ip < hi for lo, hi in spans)]
    pv.update(unrecorded)
    return StaticScan(name, size, decoded, dict(sites), port_io, dict(pv), len(recorded),
                      len(unrecorded))


def _ops_tables(data: bytes) -> list[tuple[int, int]]:
    """``(address, size)`` of the ops tables an ELF image may call through: its
    ``paravirt_ops`` symbol (a 2.6.23-layout copy) and the call ROM's table."""
    tables = [(layout.TABLE_ADDR, 4 * layout.NR_SLOTS)]
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    try:
        elf = ELFFile(io.BytesIO(data))
        for sec in elf.iter_sections():
            if isinstance(sec, SymbolTableSection):
                for sym in sec.iter_symbols():
                    if sym.name == "paravirt_ops" and sym["st_shndx"] != "SHN_UNDEF":
                        tables.append((int(sym["st_value"]), int(sym["st_size"]) or 4 * layout.NR_SLOTS))
    except (ELFError, ValueError):
        pass
    return tables


_INDIRECT = {_C.CALL_RM32, _C.JMP_RM32}


def _through_table(ins: x86.Instruction, tables: list[tuple[int, int]]) -> str | None:
    """The op of an indirect ``call``/``jmp`` through an absolute slot of an ops table."""
    if ins.code not in _INDIRECT or ins.op0_kind != x86.OpKind.MEMORY:
        return None
    if ins.memory_base != x86.Register.NONE or ins.memory_index != x86.Register.NONE:
        return None
    disp = ins.memory_displacement & 0xFFFFFFFF
    for base, size in tables:
        if base <= disp < base + size and (disp - base) % 4 == 0:
            return layout.SLOTS.get((disp - base) // 4)
    return None


def _route(ins: x86.Instruction, previous: int | None, info: x86.InstructionInfoFactory) -> list[str]:
    code = ins.code
    if code == _C.INVALID:
        return []
    if code == _C.HLT and previous == _C.STI:
        return ["safe_halt"]  # sti;hlt: the hlt in the shadow of sti
    hook = ROUTING.get(code)
    if hook is not None:
        return [hook]
    if code == _C.MOV_CR_R32 and ins.op0_register in _CR_REGS:
        return [f"write_cr{_CR_REGS[ins.op0_register]}"]
    if code == _C.MOV_R32_CR and ins.op1_register in _CR_REGS:
        return [f"read_cr{_CR_REGS[ins.op1_register]}"]
    if code == _C.MOV_DR_R32:
        return ["set_debugreg"]
    if code == _C.MOV_R32_DR:
        return ["get_debugreg"]
    if code in _OUT_IMM and ins.immediate8 == IO_DELAY_PORT:
        return ["io_delay"]
    found: list[str] = []
    if ins.memory_base == x86.Register.NONE and ins.memory_index == x86.Register.NONE:
        disp = ins.memory_displacement & 0xFFFFFFFF
        if APIC_BASE <= disp < APIC_END:
            for mem in info.info(ins).used_memory():
                if mem.access in _READS:
                    found.append("apic_read")
                if mem.access in _WRITES:
                    found.append("apic_write")
    return found


# ------------------------------------------------------------------------- units

#: unit -> the functions of pvframe.timekeeping.units that convert it (by what they take
#: or return); checked against the module by the tests
UNIT_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "s": (),  # wallclock seconds: no conversion in the layer; backends divide ns themselves
    "ns": ("tsc_to_ns", "ns_to_tsc", "pvclock_ns", "sched_clock_ns", "cyc2ns", "ns2cyc"),
    "cycles": ("vmi_cycles_to_ns", "ns_to_vmi_cycles", "cyc2ns_scale", "sched_clock_ns",
               "counter_ticks"),
    "khz": ("cyc2ns_scale", "clocksource_khz2mult", "pvclock_hz"),
    "xloops": (),
    "pfn": (),
}
_UNITS_CALL = re.compile(r"\bunits\.(\w+)\(")
_SELF_CALL = re.compile(r"\bself\.(\w+)\(")
_INLINE_SCALE = re.compile(
    r"\b(?:1_?000_?000_?000|1_?000_?000|10 ?\*\* ?[369]|1e[369]|NSEC_PER_\w+)\b|// ?1_?000\b"
)


_DOCSTRING = re.compile(r'"""[\s\S]*?"""|#[^\n]*')


def _source(fn: Any) -> str:
    """The code of ``fn`` without docstrings and comments ("" if it has no source)."""
    try:
        return _DOCSTRING.sub("", inspect.getsource(fn))
    except (OSError, TypeError):
        return ""


def conversions(plugin: Any, op: str) -> list[str]:
    """Where ``plugin``'s implementation of ``op`` converts units: the units functions it
    calls (directly or in a ``self`` helper), plus ``inline`` if it scales by itself."""
    fn = getattr(plugin, PREFIX + op, None)
    if fn is None:
        return []
    text = _source(fn)
    for helper in _SELF_CALL.findall(text):
        text += _source(getattr(plugin, helper, None))
    found = sorted(set(_UNITS_CALL.findall(text)))
    if _INLINE_SCALE.search(text):
        found.append("inline")
    return found


# ------------------------------------------------------------------ dynamic report


@attrs.define
class BackendReport:
    name: str
    implemented: tuple[str, ...]
    inherited: tuple[str, ...]
    calls: Counter[str] = attrs.field(factory=Counter)
    hypercalls: dict[str, Counter[str]] = attrs.field(factory=dict)
    measured: bool = False
    runs: list[str] = attrs.field(factory=list)
    conversions: dict[str, list[str]] = attrs.field(factory=dict)
    #: op -> calls that reached the call ROM (guest calls of the op, pvframe.pvcall)
    pvcalls: Counter[str] = attrs.field(factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        hooks = {
            op: {"calls": n, "pv_calls": self.pvcalls.get(op, 0),
                 "hypercalls": dict(self.hypercalls.get(op, {})),
                 "hypercalls_per_call": round(sum(self.hypercalls.get(op, {}).values()) / n, 3)}
            for op, n in sorted(self.calls.items())
        }
        outside = self.hypercalls.get("(outside hooks)")
        return {
            "implemented": list(self.implemented), "inherited": list(self.inherited),
            "hypercalls_measured": self.measured, "runs": self.runs, "hooks": hooks,
            "hypercalls_outside_hooks": dict(outside or {}),
            "conversions": self.conversions,
        }


def measure(
    backend: str,
    images: Iterable[tuple[str, bytes, int | None]],
    *,
    backends: dict[str, plugins.BackendInfo] | None = None,
    max_instructions: int = 20_000_000,
    on_run: Callable[[str], None] | None = None,
) -> BackendReport:
    """Run every image on ``backend`` with a counting tracer; ``images`` are
    ``(name, bytes, raw_load_addr or None for multiboot)``."""
    from pvframe.machine import Machine
    from pvframe.tools.trace import Tracer

    backends = plugins.discover() if backends is None else backends
    info = plugins.get_backend(backend, backends)
    report = BackendReport(backend, info.implemented, info.inherited)
    for image_name, data, raw in images:
        tracer = Tracer(keep_events=False)
        machine = Machine(backend, backends=backends, extra_plugins=[tracer])
        tracer.attach(machine)
        if raw is None:
            machine.load_multiboot(data)
        else:
            machine.load_raw(data, raw, raw)
        result = machine.run(max_instructions)
        tracer.finish()
        report.measured = report.measured or tracer._report is not None
        report.calls.update(tracer.calls)
        report.pvcalls.update(machine.pvcall.calls)
        for op, hc in tracer.hypercalls_by_op.items():
            report.hypercalls.setdefault(op, Counter()).update(hc)
        report.runs.append(f"{image_name}: {result.stop}")
        if on_run is not None:
            on_run(image_name)
    plugin = plugins.instantiate(info.factory)
    for entry in catalogue.CATALOGUE:
        if entry.units:
            where = conversions(plugin, entry.name) if entry.name in info.implemented or backend == plugins.NATIVE else []
            if backend != plugins.NATIVE and entry.name in info.inherited:
                where = ["inherited from native"]
            report.conversions[entry.name] = where
    return report


def units_table() -> list[dict[str, Any]]:
    """Every op with units crossing the interface, and the units functions for them."""
    return [
        {"op": op.name, "group": op.group, "units": list(op.units),
         "unit_functions": sorted({f for u in op.units for f in UNIT_FUNCTIONS.get(u, ())}),
         "xen": op.xen, "vmi": op.vmi}
        for op in catalogue.CATALOGUE if op.units
    ]


def load_image(path: Path, raw: bool = False) -> bytes:
    """The image's bytes, refused from its headers when it cannot fit the default
    machine's RAM (:func:`pvframe.platform.loader.read_image`)."""
    from pvframe.machine import MachineConfig
    from pvframe.platform.loader import ImageError, read_image

    if not path.is_file():
        raise ScanError(f"image {str(path)!r} does not exist or is not a file")
    try:
        return read_image(path, MachineConfig().ram_size, raw=raw)
    except ImageError as exc:
        raise ScanError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ScanError(f"cannot read the image {str(path)!r}: {exc.strerror}") from None


__all__ = [
    "ROUTING", "UNIT_FUNCTIONS", "BackendReport", "ScanError", "StaticScan", "code_regions",
    "conversions", "load_image", "measure", "scan", "units_table",
]
