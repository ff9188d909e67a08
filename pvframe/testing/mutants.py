"""Hook-level mutation testing: the kit's own measure of its power.

From any installed backend this module derives wrong backends automatically, one mutation
of one hook each, and runs the kit against every one of them: a mutant the kit tells apart
from native is *killed*; one it passes as equivalent is a *survivor*, a place where the kit
is blind. The kill rate per hook is the figure a backend author reads.

A mutant is the backend under test layered with an overlay (:data:`pvframe.plugins.OVERLAY`):
a subclass of the backend's class whose ``pvframe_overlay(op, below)`` wraps the one
mutated op, whoever implements it (the backend or native, which it inherits from). Nothing
here names a hook: the mutations are derived from the hookspecs' parameters and return
annotations (:data:`pvframe.plugins.SPEC_PARAMS`, :data:`~pvframe.plugins.SPEC_RETURNS`),
and the hooks mutated are those the kit's programs reach on that backend, counted in a
first run. A hook that becomes callable from guest code later is mutated as soon as a
generator reaches it.

Mutations (:class:`Mutation`), per reached hook:

* ``skip``: the call does nothing and returns the empty value of its type (None, 0, zeros);
* ``flip``/``clear`` one bit of an argument or of the result, the bits drawn from three
  classes: *flags*, *reserved/cache-control* and *address* bits. Where the hook's value has
  an architectural layout (EFLAGS for ``restore_fl``, CR0/CR3/CR4, MSR numbers and values,
  APIC registers, linear addresses) the classes hold the bits that layout gives meaning to
  (:data:`BIT_CLASSES`); a bit the architecture tells the consumer to ignore (EFLAGS bits
  other than IF in ``restore_fl``, Linux 2.6.22 ``native_restore_fl``; the offset bits of
  ``invlpg``'s address, Intel SDM Vol. 2A INVLPG) would make an *equivalent* mutant, not a
  blind spot, and is not drawn. A ``clear`` is made only for a bit the reach run saw set
  and not always set (otherwise it is no change, or the same as the flip);
* ``off-by-one`` of an argument or of the result, where bit 0 of the value means
  something (a count, an address, a leaf number; not an EFLAGS image or an APIC register
  offset, whose low bits the consumer ignores);
* ``stale``: the result of the previous call (the first call is left alone);
* ``glitch``: every second call is skipped (the result is the empty value).

Mutants no guest could tell apart are *equivalent* and not run; the report lists them
with the reason: every mutant of an op whose implementation is empty (:func:`is_empty`,
Linux's ``paravirt_nop``), of an argument the implementation never reads
(:func:`unread_arguments`), the few of :data:`EQUIVALENT`, and what the backend itself
declares unobservable on it, with its reason (:func:`unobservable`: the Xen model's
page-type and pin bookkeeping, which the guest's MMU never walks).

:func:`run` measures one backend: the corpus (:func:`corpus`: the CI profile's programs of
both searches, the second calling every op through the call ROM) is drawn once
(derandomized), native's observations are taken once, and each mutant runs the corpus
programs that reach its hook and then the hook contracts until the first problem
(:func:`pvframe.testing.oracle.judge`: a property or a difference from native).
"""

from __future__ import annotations

import dis
import inspect
import itertools
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from hypothesis import HealthCheck, Phase, given, settings

from pvframe import plugins
from pvframe.hookspecs import PREFIX
from pvframe.testing import contracts, oracle, sampler, strategies
from pvframe.testing.programs import Program

#: the glitch hits every N-th call
GLITCH_EVERY = 2

FLAGS, CACHE, ADDRESS = "flags", "reserved/cache-control", "address"
Classes = dict[str, tuple[int, ...]]

#: (op, argument or "result") -> bit class -> bit positions the architecture gives meaning
#: to. ``restore_fl``/``save_fl``: only IF crosses the interface (Linux 2.6.22
#: arch/i386/kernel/paravirt.c ``native_save_fl``/``native_restore_fl`` callers mask
#: X86_EFLAGS_IF); CR0/CR3/CR4: SDM Vol. 3A §2.5; PTE-like and address values: §4.3.
_CR0: Classes = {FLAGS: (0, 1, 2, 3, 5, 16, 18, 31), CACHE: (29, 30)}
_CR3: Classes = {CACHE: (3, 4), ADDRESS: (12, 13, 20, 21)}
_CR4: Classes = {FLAGS: (0, 1, 2, 3, 4, 7, 8), CACHE: (5, 11)}
_LINEAR: Classes = {ADDRESS: (12, 13, 22, 30)}
#: this CPU has no MSR above 0x7FFFFFFF (SYSENTER, APIC_BASE, TSC): bit 31 set is an
#: invalid number whichever way the other bits go, so only bits that move a valid number
#: are drawn
_MSR_NUMBER: Classes = {ADDRESS: (0, 1, 4, 8)}
_MSR_VALUE: Classes = {FLAGS: (0, 8, 11), ADDRESS: (12, 31), CACHE: (32, 63)}
_APIC_REG: Classes = {ADDRESS: (4, 5, 6, 8, 9)}
_APIC_VALUE: Classes = {FLAGS: (0, 4, 8, 16, 17), ADDRESS: (24, 31), CACHE: (12, 28)}
_WORD: Classes = {FLAGS: (0, 1, 2), CACHE: (3, 4), ADDRESS: (12, 31)}
#: a descriptor-table limit is 16 bits; only vectors/selectors the limit cuts off notice
_LIMIT: Classes = {ADDRESS: (3, 10, 15)}
#: a page directory's physical address (``__pa(mm->pgd)``): a directory is one page
#: (2.6.23 arch/i386/mm/pgtable.c ``pgd_alloc``), so bits 0-11 are zero and every
#: consumer takes the frame (Xen's MMUEXT_PIN_L2_TABLE an mfn, VMI's CURRENT_AS test
#: ``mm_pgd & 0xFFFFF000``, CR3's base field, SDM Vol. 3A §4.3): only the frame's bits
#: are drawn, and no off-by-one
_PGD: Classes = {ADDRESS: (12, 13, 22, 31)}
#: a page frame number: non-PAE physical addresses have 32 bits, so a frame number 20
#: (SDM Vol. 3A §4.3); a bit above 19 is shifted out of every address made from it
_PFN: Classes = {FLAGS: (0, 1, 2), CACHE: (3, 4), ADDRESS: (12, 19)}
#: a descriptor-table entry number: a table has at most 8192 entries (SDM Vol. 3A §3.5.1),
#: and 2.6.23 include/asm-i386/desc.h ``write_dt_entry`` stores at ``dt + entry * 8`` in
#: 32 bits, where bits 29-31 of the number are shifted out (bit 31 flipped is the same
#: address): the generic word's bits but 31
_ENTRYNUM: Classes = {FLAGS: (0, 1, 2), CACHE: (3, 4), ADDRESS: (12,)}
BIT_CLASSES: dict[tuple[str, str], Classes] = {
    ("restore_fl", "flags"): {FLAGS: (9,)},
    ("save_fl", "result"): {FLAGS: (9,)},
    ("write_cr0", "value"): _CR0, ("read_cr0", "result"): _CR0,
    ("write_cr3", "value"): _CR3, ("read_cr3", "result"): _CR3,
    ("write_cr4", "value"): _CR4, ("read_cr4", "result"): _CR4,
    ("read_cr2", "result"): {FLAGS: (0, 2), ADDRESS: (12, 13, 22, 30)},
    # CPUID leaves this CPU has (0, 1, 2, 0x80000000) have no subleaves: ECX is ignored
    ("cpuid", "ecx"): {},
    ("load_gdt", "limit"): _LIMIT, ("load_idt", "limit"): _LIMIT,
    ("store_gdt", "result[1]"): _LIMIT, ("store_idt", "result[1]"): _LIMIT,
    ("flush_tlb_single", "addr"): _LINEAR,
    ("read_msr", "msr"): _MSR_NUMBER, ("write_msr", "msr"): _MSR_NUMBER,
    ("read_msr", "result"): _MSR_VALUE, ("write_msr", "value"): _MSR_VALUE,
    ("read_tsc", "result"): {FLAGS: (0, 8), ADDRESS: (16, 31, 32)},
    ("apic_read", "reg"): _APIC_REG, ("apic_write", "reg"): _APIC_REG,
    ("apic_write_atomic", "reg"): _APIC_REG,
    ("apic_read", "result"): _APIC_VALUE, ("apic_write", "value"): _APIC_VALUE,
    ("apic_write_atomic", "value"): _APIC_VALUE,
    ("write_msr", "result"): {FLAGS: (0,)},
    # only IOPL crosses the interface: Linux passes ``thread.iopl`` (``level << 12``,
    # 2.6.22 arch/i386/kernel/ioport.c sys_iopl), which native_set_iopl_mask (2.6.22
    # include/asm-i386/processor.h) ORs into EFLAGS with IOPL cleared. Of the generic
    # word's other bits, 1 is fixed at 1 and 3 and 31 are reserved (popf ignores them,
    # SDM Vol. 1 §3.4.3), and 0, 2 and 4 (CF, PF, AF) are status flags no C caller keeps
    # across a call (the i386 SysV ABI): flipping them changes nothing any guest sees.
    # Without bit 0 meaning anything, no off-by-one (a mask 0x1000 apart is flip 12).
    ("set_iopl_mask", "mask"): {FLAGS: (12, 13)},
    **{(op, "entrynum"): _ENTRYNUM
       for op in ("write_ldt_entry", "write_gdt_entry", "write_idt_entry")},
}


#: mutations no guest can observe on this machine, with the reason (the ``safe_halt``
#: skip and glitch, equivalent while guests reached it only as ``sti; hlt``, are not:
#: the corpus calls it through the call ROM with IF clear)
_POST = ("its one effect is a write to the POST port 0x80, which reads 0xff whatever was "
         "written (QEMU's ioport80) and costs no virtual time")
_CACHES = ("the machine has no caches: writing back and invalidating them changes nothing "
           "a guest reads (SDM Vol. 2B WBINVD)")
_HALTED = ("the executor halts the CPU itself (``hlt`` and the call ROM's halt stub set it "
           "halted before the hook runs) and the machine idles a halted CPU until the next "
           "interrupt: a halt that does nothing halts all the same (SDM Vol. 2A HLT)")
#: a ``set_wallclock`` that does nothing and returns 0 is a correct backend's: VMI's
#: (2.6.22 arch/i386/kernel/vmi.c ``vmi_set_wallclock``: ``return 0``); a glitch, which
#: sets the clock on some calls only, is no backend's (the contract
#: ``set_wallclock_sets_or_leaves_the_clock`` kills it)
_WALLCLOCK = ("a set_wallclock that leaves the clock and returns 0 is VMI's (2.6.22 "
              "arch/i386/kernel/vmi.c vmi_set_wallclock), a correct backend: no property "
              "holding for every backend tells it from native's")
#: lazy mode only permits a backend to defer page-table and CPU-state updates until it
#: is left (2.6.23 include/asm-i386/paravirt.h ``arch_enter_lazy_mmu_mode``/``_leave_``):
#: never entering it, every update made at once, is what a backend without batching does
_LAZY = ("lazy mode only lets a backend defer updates until it is left (2.6.23 "
         "include/asm-i386/paravirt.h arch_enter_lazy_mmu_mode); a backend that never "
         "enters it applies every update at once, as one without batching does (native's "
         "lazy mode is bookkeeping); a glitch, which leaves a mode entered, is killed")
EQUIVALENT: dict[tuple[str, str], str] = {
    ("set_wallclock", "skip"): _WALLCLOCK,
    ("set_lazy_mode", "skip"): _LAZY,
    ("halt", "skip"): _HALTED, ("halt", "glitch"): _HALTED,
    ("io_delay", "skip"): _POST, ("io_delay", "glitch"): _POST,
    ("wbinvd", "skip"): _CACHES, ("wbinvd", "glitch"): _CACHES,
}


#: the attribute of a backend's class declaring what of its ops no guest can observe on
#: it: ``{"op": reason}`` (every mutant of the op), ``{"op:argument": reason}`` (the
#: mutants of that argument) or ``{"op:argument:kind:bit": reason}`` (one bit mutation,
#: kind ``flip`` or ``clear``); :func:`unobservable`
UNOBSERVABLE_ATTR = "pvframe_unobservable"


def unobservable(base: plugins.BackendInfo) -> dict[str, str]:
    """What backend ``base`` declares unobservable on it (:data:`UNOBSERVABLE_ATTR`): ops
    or arguments that feed only its hypervisor model's own bookkeeping, which nothing the
    guest executes reads back (the Xen model's machine view of the page tables is not the
    one the guest's MMU walks). Their mutants are counted equivalent, each listed with
    the backend's reason, not run: a blind spot by the backend's design, stated where
    the report shows it, not a survivor the kit could kill."""
    declared = getattr(base.factory, UNOBSERVABLE_ATTR, None) or {}
    if not isinstance(declared, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in declared.items()):
        raise TypeError(f"backend {base.name!r}: {UNOBSERVABLE_ATTR} is not a dict of str to str")
    return dict(declared)


def set_aside(mutations: list[Mutation], declared: dict[str, str],
              ) -> tuple[list[Mutation], dict[str, int]]:
    """The mutations to run, and how many of them each key of ``declared`` (an op,
    ``op:argument`` or ``op:argument:kind:bit``: :func:`unobservable`) sets aside as
    equivalent."""
    kept: list[Mutation] = []
    hidden: dict[str, int] = {}
    for m in mutations:
        keys = (m.op, f"{m.op}:{m.target}", f"{m.op}:{m.target}:{m.kind}:{m.bit}")
        key = next((k for k in keys if k in declared), "")
        if key:
            hidden[key] = hidden.get(key, 0) + 1
        else:
            kept.append(m)
    return kept, hidden


def implementation(base: plugins.BackendInfo, native: plugins.BackendInfo, op: str) -> Any:
    """The function that implements ``op`` for backend ``base``: its own, or native's,
    which it inherits (None if neither has one)."""
    for info in (base, native):
        if info is native or op in info.implemented:
            found = getattr(info.factory, PREFIX + op, None)
            if found is not None:
                return found
    return None


def _code_of(function: Any) -> Any:
    """The code object of ``function`` (a bound method's function's), or None."""
    return getattr(getattr(function, "__func__", function), "__code__", None)


def is_empty(function: Any) -> bool:
    """Whether ``function``'s body does nothing (a docstring or ``pass``: Linux's
    ``paravirt_nop``). Every mutation of such an op is equivalent: skipping a call that
    does nothing, or passing it other arguments, changes nothing any guest can see."""
    returns, value = returns_constant(function)
    return returns and value is None


def returns_constant(function: Any) -> tuple[bool, Any]:
    """Whether ``function``'s body is one ``return`` of a constant, and the constant (VMI's
    ``set_wallclock``: ``return 0``, as 2.6.22 ``vmi_set_wallclock``). Skipping such an op
    when its constant is what a skipped call returns changes nothing."""
    code = _code_of(function)
    if code is None:
        return False, None
    body = [(i.opname, i.argval) for i in dis.get_instructions(code)
            if i.opname not in ("RESUME", "NOP")]
    if len(body) == 1 and body[0][0] == "RETURN_CONST":
        return True, body[0][1]
    if len(body) == 2 and body[0][0] == "LOAD_CONST" and body[1][0] == "RETURN_VALUE":
        return True, body[0][1]
    return False, None


def unread_arguments(function: Any, names: Iterable[str]) -> set[str]:
    """The arguments among ``names`` that ``function`` never reads (a native
    ``kmap_atomic_pte`` has no use for the kmap slot without highmem): a mutation of such
    an argument is equivalent."""
    code = _code_of(function)
    if code is None:
        return set()
    read: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        read |= set(c.co_freevars) | set(c.co_cellvars) & set(c.co_varnames)
        for i in dis.get_instructions(c):
            if i.opname.startswith(("LOAD_FAST", "LOAD_DEREF", "LOAD_CLOSURE")):
                read |= set(i.argval) if isinstance(i.argval, tuple) else {i.argval}
        stack += [k for k in c.co_consts if hasattr(k, "co_code")]
    if "locals" in read or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        return set()
    return {n for n in names if n not in read}


def bit_classes(op: str, target: str) -> dict[str, tuple[int, ...]]:
    """The bit classes mutated in ``target`` of ``op`` (a generic word layout when the
    value has no table entry: low flag bits, bits 3-4, page-frame bits)."""
    if (op, target) in BIT_CLASSES:
        return BIT_CLASSES[(op, target)]
    if target.endswith("pgd"):
        return _PGD
    return _PFN if target.endswith("pfn") else _WORD


# ------------------------------------------------------------------------------ mutations


def _empty(annotation: str) -> Any:
    """The value a skipped call returns, by the spec's return annotation."""
    if annotation.startswith("tuple"):
        return tuple(0 for _ in annotation.split(","))
    return 0 if annotation == "int" else None


@attrs.frozen
class Mutation:
    """One way to get one hook wrong: ``kind`` is skip, flip, clear, off-by-one, stale or
    glitch; ``target`` is an argument name, ``result`` or ``result[i]`` (a tuple's
    element), empty for skip and glitch."""

    op: str
    kind: str
    target: str = ""
    bit: int = -1
    bit_class: str = ""

    def describe(self) -> str:
        where = f" of {self.target}" if self.target else ""
        if self.kind in ("flip", "clear"):
            return f"{self.op}: {self.kind} bit {self.bit} ({self.bit_class}){where}"
        if self.kind == "glitch":
            return f"{self.op}: skip every {GLITCH_EVERY}nd call"
        return f"{self.op}: {self.kind}{where}"

    def changes(self, log: ValueLog) -> bool:
        """Whether this mutation changes any call of a run whose calls and values
        ``log`` recorded: one that does not leaves that run as it was (the unmutated
        backend's, which native passed). A ``clear`` changes nothing where the bit was
        never set, a ``stale`` result nothing where every result equals the one before,
        a ``glitch`` nothing in a run of one call."""
        calls = log.calls.get(self.op, 0)
        if self.kind == "clear":
            return bool(log.ors.get((self.op, self.target), 0) >> self.bit & 1)
        if self.kind == "stale":
            return log.varies(self.op)
        if self.kind == "glitch":
            return calls >= GLITCH_EVERY
        return calls > 0

    def wrap(self, below: Callable[..., Any]) -> Callable[..., Any]:
        """``below`` (the bound implementation) with this mutation; its state (the previous
        result, the call count) belongs to one machine."""
        hook = PREFIX + self.op
        params = plugins.SPEC_PARAMS[hook][1:]
        empty = _empty(plugins.SPEC_RETURNS.get(hook, "None"))
        kind, target = self.kind, self.target

        def change(v: Any) -> Any:
            if kind == "flip":
                return v ^ (1 << self.bit)
            if kind == "clear":
                return v & ~(1 << self.bit)
            return v + 1  # off-by-one

        if kind == "skip":
            return lambda *args: empty
        if kind == "glitch":
            calls = [0]

            def glitch(*args: Any) -> Any:
                calls[0] += 1
                return empty if calls[0] % GLITCH_EVERY == 0 else below(*args)

            return glitch
        if kind == "stale":
            last: list[Any] = []

            def stale(*args: Any) -> Any:
                result = below(*args)
                previous = last[0] if last else result
                last[:] = [result]
                return previous

            return stale
        if target in params:
            index = params.index(target)

            def argument(*args: Any) -> Any:
                changed = list(args)
                changed[index] = change(changed[index])
                return below(*changed)

            return argument
        element = int(target[7:-1]) if target.startswith("result[") else None

        def result(*args: Any) -> Any:
            value = below(*args)
            if value is None:
                return value
            if element is None:
                return change(value)
            return tuple(change(v) if i == element else v for i, v in enumerate(value))

        return result


@attrs.define
class ValueLog:
    """Per op: calls, and for each int argument and result the OR and the AND of every
    value seen (what decides which ``clear`` mutants change anything)."""

    calls: dict[str, int] = attrs.field(factory=dict)
    ors: dict[tuple[str, str], int] = attrs.field(factory=dict)
    ands: dict[tuple[str, str], int] = attrs.field(factory=dict)

    #: ops whose result differed between two calls
    changing: set[str] = attrs.field(factory=set)
    last: dict[str, Any] = attrs.field(factory=dict)

    def result(self, op: str, value: Any) -> None:
        """Note a call's result (what decides whether a ``stale`` mutant changes it)."""
        if op in self.last and self.last[op] != value:
            self.changing.add(op)
        self.last[op] = value

    def varies(self, op: str) -> bool:
        return op in self.changing

    def merge(self, other: ValueLog) -> None:
        """Add the calls and values of ``other`` (a later run's) to this log."""
        for op, n in other.calls.items():
            self.calls[op] = self.calls.get(op, 0) + n
        for key, value in other.ors.items():
            self.ors[key] = self.ors.get(key, 0) | value
            self.ands[key] = self.ands.get(key, other.ands[key]) & other.ands[key]
        self.changing |= other.changing

    def note(self, op: str, target: str, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            key = (op, target)
            self.ors[key] = self.ors.get(key, 0) | value
            self.ands[key] = self.ands.get(key, value) & value


class Recorder:
    """An overlay that leaves every call alone and notes its values in a :class:`ValueLog`
    (bound as an extra plugin during the reach run)."""

    def __init__(self, log: ValueLog) -> None:
        self.log = log

    def pvframe_overlay(self, op: str, below: Callable[..., Any]) -> Callable[..., Any]:
        params = plugins.SPEC_PARAMS[PREFIX + op][1:]
        log = self.log

        def recorded(*args: Any) -> Any:
            log.calls[op] = log.calls.get(op, 0) + 1
            for name, value in zip(params, args, strict=False):
                log.note(op, name, value)
            result = below(*args)
            log.result(op, result)
            if isinstance(result, tuple):
                for i, value in enumerate(result):
                    log.note(op, f"result[{i}]", value)
            else:
                log.note(op, "result", result)
            return result

        return recorded


def mutations_of(op: str, log: ValueLog, unread: Iterable[str] = ()) -> list[Mutation]:
    """Every mutation of ``op``, from its spec and the values the reach run saw, but for
    the arguments in ``unread`` (:func:`unread_arguments`). ``stale`` is made only for an
    op whose results the reach run saw change (a result that is the same in every call,
    ``get_cpu_khz``'s, is its own previous one: no change)."""
    hook = PREFIX + op
    annotation = plugins.SPEC_RETURNS.get(hook, "None")
    found = [Mutation(op, kind) for kind in ("skip", "glitch") if (op, kind) not in EQUIVALENT]
    targets = [name for name in plugins.SPEC_PARAMS[hook][1:]
               if (op, name) in log.ors and name not in set(unread)]
    if annotation != "None" and log.varies(op):
        found.append(Mutation(op, "stale"))
        if annotation.startswith("tuple"):
            targets += [t for (o, t) in log.ors if o == op and t.startswith("result[")]
        elif (op, "result") in log.ors:
            targets.append("result")
    for target in targets:
        classes = bit_classes(op, target)
        if any(0 in bits for bits in classes.values()):
            found.append(Mutation(op, "off-by-one", target))
        ors, ands = log.ors[(op, target)], log.ands[(op, target)]
        for cls, bits in classes.items():
            for bit in bits:
                found.append(Mutation(op, "flip", target, bit, cls))
                if ors >> bit & 1 and not ands >> bit & 1:
                    found.append(Mutation(op, "clear", target, bit, cls))
    return found


def mutant_name(base: str, mutation: Mutation) -> str:
    return f"{base}~{mutation.describe()}"


def mutant_backend(base: plugins.BackendInfo, mutation: Mutation) -> plugins.BackendInfo:
    """A backend that is ``base`` with ``mutation`` laid over it: a subclass of its class
    (a module's hooks are gathered into a class first) whose overlay wraps one op."""
    factory = base.factory
    if not isinstance(factory, type):
        module = factory
        members = {k: staticmethod(getattr(module, k)) for k in dir(module)
                   if k.startswith(PREFIX) or k == "attach"}
        factory = type(f"{base.name}_module", (), members)

    def pvframe_overlay(self: Any, op: str, below: Callable[..., Any]) -> Callable[..., Any]:
        return mutation.wrap(below) if op == mutation.op else below

    cls = type(f"Mutant_{factory.__name__}", (factory,), {"pvframe_overlay": pvframe_overlay})
    name = mutant_name(base.name, mutation)
    return attrs.evolve(base, name=name, factory=cls, implemented=(*base.implemented, mutation.op))


# ---------------------------------------------------------------------------------- runs


def draw_programs(strategy: Any, examples: int) -> list[Program]:
    """The first ``examples`` programs ``strategy`` draws, derandomized (the same list on
    every call: the corpus a mutation run or a reuse test runs)."""
    drawn: list[Program] = []

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(program: Program) -> None:
        drawn.append(program)

    collect()
    return drawn


def corpus(examples: int, pv_calls: bool = True) -> list[Program]:
    """The programs of the kit's two searches as ``pvframe check`` draws them with the CI
    profile (derandomized: the same programs every run): ``examples`` of
    :func:`pvframe.testing.sampler.programs`, then (``pv_calls``) as many
    :func:`~pvframe.testing.strategies.pv_call_programs`, which call every op through the
    call ROM, so that every one of the 92 hooks is mutated, not only those a privileged
    instruction reaches."""
    drawn = [d.program for d in itertools.islice(sampler.programs(), examples)]
    if pv_calls:
        drawn += draw_programs(strategies.pv_call_programs(), examples)
    return drawn


@attrs.frozen
class Outcome:
    """What the kit did to one mutant: ``killed_by`` names the layer and the problem
    (None: it survived); ``programs`` is how many programs ran."""

    mutation: Mutation
    killed_by: str | None
    programs: int
    seconds: float


@attrs.define
class Report:
    """A mutation run of one backend."""

    backend: str
    corpus: int
    reached: dict[str, int]
    outcomes: list[Outcome] = attrs.field(factory=list)
    seconds: float = 0.0
    reach_seconds: float = 0.0
    #: programs the unmutated backend itself fails (left out of the corpus)
    problems: list[str] = attrs.field(factory=list)
    #: mutations left out as unobservable on this machine (:data:`EQUIVALENT`)
    equivalent: list[str] = attrs.field(factory=list)

    def per_hook(self) -> dict[str, tuple[int, int]]:
        """op -> (mutants, killed)."""
        table: dict[str, tuple[int, int]] = {}
        for o in self.outcomes:
            n, k = table.get(o.mutation.op, (0, 0))
            table[o.mutation.op] = (n + 1, k + (o.killed_by is not None))
        return table

    @property
    def killed(self) -> int:
        return sum(o.killed_by is not None for o in self.outcomes)

    @property
    def survivors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.killed_by is None]

    def kill_rate(self) -> float:
        return self.killed / len(self.outcomes) if self.outcomes else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "programs": self.corpus, "mutants": len(self.outcomes),
            "killed": self.killed, "kill_rate": self.kill_rate(), "seconds": self.seconds,
            "hooks": {op: {"calls": self.reached.get(op, 0), "mutants": n, "killed": k}
                      for op, (n, k) in sorted(self.per_hook().items())},
            "survivors": [s.mutation.describe() for s in self.survivors],
            "equivalent": self.equivalent, "problems": self.problems,
        }

    def lines(self) -> list[str]:
        """The printed report: kill rate per hook, survivors with their mutation, totals."""
        out = [f"mutation testing of backend {self.backend!r}: {len(self.outcomes)} mutants of "
               f"{len(self.per_hook())} hooks ({len(self.reached)} guest-reachable), "
               f"{self.corpus} programs per mutant"]
        out.append(f"  {'hook':<22}{'calls':>8}{'mutants':>9}{'killed':>8}{'rate':>8}")
        for op, (n, k) in sorted(self.per_hook().items()):
            out.append(f"  {op:<22}{self.reached.get(op, 0):>8}{n:>9}{k:>8}{100 * k / n:>7.1f}%")
        survivors = self.survivors
        out += [f"equivalent, not counted: {e}" for e in self.equivalent]
        out += [f"left out, the backend itself fails it: {p}" for p in self.problems]
        out.append(f"survivors ({len(survivors)}):" if survivors else "survivors: none")
        out += [f"  {s.mutation.describe()}" for s in survivors]
        programs = sum(o.programs for o in self.outcomes)
        out.append(f"killed {self.killed}/{len(self.outcomes)} ({100 * self.kill_rate():.1f}%) in "
                   f"{self.seconds:.1f} s ({self.reach_seconds:.1f} s reach run, {programs} mutant "
                   f"program runs, {self.seconds / max(1, len(self.outcomes)):.2f} s per mutant)")
        return out


def reach(backend: str, programs: list[Program], backends: dict[str, plugins.BackendInfo],
          reached_by: list[frozenset[str]] | None = None,
          per_program: list[ValueLog] | None = None,
          ) -> tuple[ValueLog, list[Program], list[oracle.Observation], list[str]]:
    """Run the corpus on ``backend`` with a :class:`Recorder`: which hooks the programs
    reach, with which values; and native's observations for the judging. A program on
    which the unmutated backend itself is judged wrong would "kill" every mutant: it is
    left out, and returned as a problem line. ``reached_by`` (if given) receives, per kept
    program, the ops it called; ``per_program`` its own :class:`ValueLog`."""
    log = ValueLog()
    kept: list[Program] = []
    natives: list[oracle.Observation] = []
    problems: list[str] = []
    for i, program in enumerate(programs):
        own_log = ValueLog()
        own = oracle.observe(program, backend, backends=backends,
                             extra_plugins=(Recorder(own_log),))
        native = oracle.observe(program, plugins.NATIVE, backends=backends)
        divergence = oracle.judge(program, native, own)
        if divergence is not None:
            problems.append(f"program {i}: {divergence.field}: {divergence.first}")
            continue
        kept.append(program)
        natives.append(native)
        log.merge(own_log)
        if reached_by is not None:
            reached_by.append(frozenset(own_log.calls))
        if per_program is not None:
            per_program.append(own_log)
    return log, kept, natives, problems


def judge_mutant(name: str, programs: list[Program], natives: list[oracle.Observation],
                 backends: dict[str, plugins.BackendInfo],
                 reached_by: list[frozenset[str]] | None = None,
                 op: str | None = None, *, logs: list[ValueLog] | None = None,
                 mutation: Mutation | None = None) -> tuple[str | None, int]:
    """The first problem the kit finds with backend ``name`` (the corpus, then the hook
    contracts, which cost ~2 s and so run only for a mutant the programs let through), and
    how many programs it ran.

    With ``reached_by`` and the mutated ``op``, only the programs that called ``op`` run:
    a program that never calls the mutated hook runs the unmutated backend's code only
    (the overlay wraps that one op, and its state, the previous result or the call count,
    changes only in a call), so it observes what the reach run observed, which native
    passed. With each program's ``logs`` and the ``mutation``, only the programs in which
    it changes a call run (:meth:`Mutation.changes`), by the same argument."""
    ran = 0
    for i, (program, native) in enumerate(zip(programs, natives, strict=True)):
        if reached_by is not None and op not in reached_by[i]:
            continue
        if logs is not None and mutation is not None and not mutation.changes(logs[i]):
            continue
        ran += 1
        try:
            obs = oracle.observe(program, name, backends=backends)
        except Exception as exc:
            return f"program {i}: {type(exc).__name__}: {exc}", ran
        divergence = oracle.judge(program, native, obs)
        if divergence is not None:
            return f"program {i}: {divergence.field}: {divergence.first}", ran
    for contract in contracts.CONTRACTS:
        try:
            contracts.check(contract, name, backends)
        except Exception as exc:  # a violation, or the mutant crashing the hook
            return f"contract {contract.name}: {exc}", ran
    return None, ran


def run(
    backend: str,
    examples: int,
    *,
    backends: dict[str, plugins.BackendInfo] | None = None,
    hooks: Iterable[str] | None = None,
    sample: int | None = None,
    pv_calls: bool = True,
    seed: int | None = None,
    progress: Callable[[int, int], None] = lambda _done, _total: None,
    on_outcome: Callable[[Outcome], None] = lambda _outcome: None,
) -> Report:
    """Mutation testing of ``backend`` with a corpus of ``examples`` programs of each search
    (``pv_calls=False``: the first only). ``hooks`` restricts the mutated ops; ``sample``
    keeps every k-th mutant so that about ``sample`` remain (a bounded, deterministic run),
    or with ``seed`` a random sample of that many drawn from that seed; ``on_outcome``
    receives each mutant's outcome as it is judged."""
    start = time.perf_counter()
    backends = dict(plugins.discover() if backends is None else backends)
    base = plugins.get_backend(backend, backends)
    programs = corpus(examples, pv_calls)
    reached_by: list[frozenset[str]] = []
    logs: list[ValueLog] = []
    log, programs, natives, problems = reach(backend, programs, backends, reached_by, logs)
    reach_seconds = time.perf_counter() - start
    reached = {op: n for op, n in sorted(log.calls.items())
               if hooks is None or op in set(hooks)}
    native = backends[plugins.NATIVE]
    functions = {op: implementation(base, native, op) for op in reached}
    empty = {op: len(mutations_of(op, log)) for op in reached if is_empty(functions[op])}
    unread = {op: unread_arguments(functions[op], plugins.SPEC_PARAMS[PREFIX + op][1:])
              for op in reached}
    declared = unobservable(base)
    constant = {op for op in reached if op not in empty
                and returns_constant(functions[op]) == (True, _empty(plugins.SPEC_RETURNS.get(
                    PREFIX + op, "None")))}
    mutations, hidden = set_aside([m for op in reached if op not in empty
                                   for m in mutations_of(op, log, unread[op])
                                   if not (op in constant and m.kind in ("skip", "glitch"))],
                                  declared)
    if sample is not None and len(mutations) > sample:
        if seed is None:
            step = len(mutations) / sample
            mutations = [mutations[int(i * step)] for i in range(sample)]
        else:
            mutations = random.Random(seed).sample(mutations, sample)
    report = Report(backend, len(programs), reached, reach_seconds=reach_seconds,
                    problems=problems,
                    equivalent=[f"{op}: {kind} ({why})" for (op, kind), why in EQUIVALENT.items()
                                if op in reached])
    report.equivalent += [f"{op}: its {n} mutants (the implementation is empty, like Linux's "
                          "paravirt_nop: no call of it changes anything)"
                          for op, n in empty.items()]
    report.equivalent += [f"{op}: the mutants of {', '.join(sorted(names))} (the implementation "
                          "never reads it)" for op, names in unread.items()
                          if names and op not in empty and any((op, n) in log.ors for n in names)]
    report.equivalent += [f"{op}: skip and glitch (the implementation returns what a skipped "
                          "call returns, whatever the call)" for op in sorted(constant)]
    report.equivalent += [f"{key.replace(':', ': the mutants of ', 1)}: {n} mutants (declared "
                          f"unobservable by the backend: {declared[key]})"
                          for key, n in sorted(hidden.items())]
    for done, mutation in enumerate(mutations):
        info = mutant_backend(base, mutation)
        backends[info.name] = info
        t0 = time.perf_counter()
        killed_by, ran = judge_mutant(info.name, programs, natives, backends, reached_by,
                                      mutation.op, logs=logs, mutation=mutation)
        del backends[info.name]
        outcome = Outcome(mutation, killed_by, ran, time.perf_counter() - t0)
        report.outcomes.append(outcome)
        on_outcome(outcome)
        progress(done + 1, len(mutations))
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["BIT_CLASSES", "Mutation", "Outcome", "Recorder", "Report", "ValueLog", "corpus",
           "implementation", "is_empty", "judge_mutant", "mutant_backend", "mutations_of",
           "reach", "returns_constant", "run", "set_aside", "unobservable", "unread_arguments"]
