"""The per-op fast paths give what the general paths give:

* :meth:`pvframe.platform.mmu.MMU.fast_dwords` (an ``iret``'s frame, a descriptor, an
  IDT gate read at once) and :meth:`~pvframe.platform.mmu.MMU.stored_dwords` /
  :meth:`~pvframe.platform.mmu.MMU.fast_write_page` (an interrupt frame and ``pushf``
  stored at once): a machine whose MMU never takes them (each answers "no") ends in the
  same state, memory, TLB and hook calls included, whatever the stack's and the
  tables' pages allow;
* the instruction fetch of :meth:`pvframe.executor.cpu.Executor._lookup` answers a TLB
  hit in line: the physical address, or the page fault, and the TLB afterwards are what
  ``MMU.translate`` gives;
* the EIP map's entries :meth:`~pvframe.executor.cpu.Executor._lookup` makes in line
  name the virtual page of each block's first byte and of its last (a block whose
  instructions go on past its page's end);
* fault delivery's class attributes (``software``, ``external``, ``sets_cr2``) say of
  every exception class what ``isinstance`` said.
"""

from __future__ import annotations

from typing import Any

from asm import asm
from conftest import CODE, GDT, IDT, Machine
from hypothesis import given, settings
from hypothesis import strategies as st
from test_exec_paging import identity, pte

from pvframe.executor.faults import PageFault
from pvframe.platform.memory import PAGE_SHIFT

H = CODE + 0x800  # the handler of vector 0x30
F = CODE + 0x900  # the handler of every exception (stops there)
_STACK_PAGES = (0x7, 0x8)  # the stack's two pages (the boundary at 0x8000)


def _never_fast(m: Machine) -> None:
    """Make ``m``'s MMU answer "not at once" to every per-op fast path."""
    m.mmu.fast_dwords = lambda *a, **k: None  # type: ignore[method-assign]
    m.mmu.fast_write_page = lambda *a, **k: None  # type: ignore[method-assign]
    m.mmu.stored_dwords = lambda *a, **k: False  # type: ignore[method-assign]


_PTE_FLAGS = st.sampled_from([0x3, 0x63, 0x23, 0x1, 0x0, 0x43, 0x103])


def _interrupting(esp: int, flags: dict[int, int], wp: bool, touch: list[tuple[int, bool]],
                  gdt_accessed: bool, fast: bool) -> tuple[Any, ...]:
    """Run ``pushf; lcall; int 0x30; popf; hlt`` (the handler: ``pushf; popf; iret``) at
    ESP ``esp`` with paging on, the pages of the stack, the GDT and the IDT mapped with
    ``flags`` (page -> PTE flags), the stack pages read or written first (``touch``:
    what their fast maps hold), and say everything the run left."""
    m = Machine(asm(f"pushfl\n lcall $0x08, ${CODE + 0xA00:#x}\n int $0x30\n popfl\n hlt\n"
                    ".org 0x800\n pushfl\n popfl\n iret\n .org 0x900\n hlt\n"
                    ".org 0xA00\n lret\n"))
    m.set_gate(0x30, H)
    for vector in (8, 13, 14):
        m.set_gate(vector, F)
    identity(m)
    m.memory.write_bytes(_STACK_PAGES[0] << PAGE_SHIFT, bytes(range(256)) * 32)  # (RAM there)
    if wp:
        m.mmu.write_cr0(m.cpu.cr0 | 0x10000)
    if not gdt_accessed:  # the code descriptor's accessed bit: set by the delivery
        m.memory.write_u32(GDT + 12, m.memory.read_u32(GDT + 12) & ~0x100)
    for page, f in flags.items():
        m.memory.write_u32(pte(m, page << PAGE_SHIFT), (page << PAGE_SHIFT) | f)
    for page, store in touch:
        with _Quiet():
            if store:
                m.mmu.write((page << PAGE_SHIFT) | 0x10, 4, 0x5A5A5A5A)
            else:
                m.mmu.read((page << PAGE_SHIFT) | 0x10, 4)
    m.cpu.esp = esp
    if not fast:
        _never_fast(m)
    result = m.run(200)
    return (result, m.cpu.registers_dict(), m.cpu.cs, m.cpu.ss, m.cpu.icount,
            bytes(m.memory.read_bytes(0, 0x10000)), m.memory.read_bytes(0x100000, 0x2000),
            dict(m.mmu.tlb), m.hooks.calls)


class _Quiet:
    """Swallow a page fault (a touch of a page that does not allow it)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *_: Any) -> bool:
        return kind is not None and issubclass(kind, PageFault)


@settings(max_examples=120, deadline=None)
@given(
    esp=st.integers(0x8000 - 40, 0x8000 + 40),
    flags=st.fixed_dictionaries({
        0x7: _PTE_FLAGS, 0x8: _PTE_FLAGS,
        GDT >> PAGE_SHIFT: st.sampled_from([0x3, 0x1, 0x63]),
        IDT >> PAGE_SHIFT: st.sampled_from([0x3, 0x1, 0x0, 0x23]),
    }),
    wp=st.booleans(),
    touch=st.lists(st.tuples(st.sampled_from(_STACK_PAGES), st.booleans()), max_size=3),
    gdt_accessed=st.booleans(),
)
def test_frames_and_descriptors_read_and_stored_at_once_are_the_one_by_one_ones(
        esp: int, flags: dict[int, int], wp: bool, touch: list[tuple[int, bool]],
        gdt_accessed: bool) -> None:
    """An interrupt frame pushed, ``pushf``'s value and a far call's pushed, an IDT gate, a descriptor
    and an ``iret`` frame read, on a stack that straddles a page boundary or not, on
    pages present or not, writable or not (CR0.WP), dirty or not, in the fast maps or
    not: the state each leaves (or the fault, the double fault, the triple fault) is
    what the accesses made one by one leave."""
    fast = _interrupting(esp, flags, wp, touch, gdt_accessed, True)
    slow = _interrupting(esp, flags, wp, touch, gdt_accessed, False)
    assert fast == slow


def test_the_fast_paths_are_taken_on_a_plain_stack() -> None:
    """(The property above compares something: on a present, dirty stack page in the
    fast maps the frame is stored and read at once.)"""
    m = Machine(asm("pushfl\n int $0x30\n popfl\n hlt\n .org 0x800\n iret\n"))
    m.set_gate(0x30, H)
    identity(m)
    m.mmu.write(0x7F00, 4, 0)  # (the stack page: dirty, in the fast write map)
    m.cpu.esp = 0x7F80
    seen: list[str] = []
    for name in ("fast_dwords", "stored_dwords"):
        real = getattr(m.mmu, name)

        def spy(*a: Any, _real: Any = real, _name: str = name) -> Any:
            got = _real(*a)
            if got:
                seen.append(_name)
            return got

        setattr(m.mmu, name, spy)
    assert m.run(100) == "halted"
    assert m.cpu.esp == 0x7F80
    assert "stored_dwords" in seen and "fast_dwords" in seen


_PAGES = st.integers(0x200, 0x20F)


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["user", "supervisor", "absent"]), min_size=16, max_size=16),
    touched=st.lists(st.tuples(_PAGES, st.booleans()), max_size=8),
    user=st.booleans(),
    fetch=st.one_of(st.integers(0, 7), _PAGES),
    offset=st.integers(0, 0xFF0),
    paging=st.booleans(),
)
def test_an_instruction_fetch_answered_from_the_tlb_is_what_translate_gives(
        kinds: list[str], touched: list[tuple[int, bool]], user: bool, fetch: int, offset: int,
        paging: bool) -> None:
    """``_lookup``'s fetch at either privilege, with the page's TLB entry there or not
    (data accesses at either privilege before: ``fetch`` below 8 names one of those
    pages), supervisor-only or not, present or not, paging on or off: the physical
    address its block is found at (or the page fault) and the TLB left are those of
    ``MMU.translate``."""

    def build() -> Machine:
        m = Machine(b"\xf4")
        identity(m)
        for p, kind in zip(range(0x200, 0x210), kinds, strict=True):
            m.memory.write_bytes(p << PAGE_SHIFT, b"\x90" * 0x1000)
            flags = {"absent": 0x0, "supervisor": 0x3, "user": 0x7}[kind]
            m.memory.write_u32(pte(m, p << PAGE_SHIFT), (p << PAGE_SHIFT) | flags)
        if not paging:
            m.mmu.write_cr0(m.cpu.cr0 & ~0x80000000)
        for p, as_user in touched:
            with _Quiet():
                m.mmu.translate(p << PAGE_SHIFT, False, as_user)
        m.mmu.set_user(user)
        return m

    page = fetch if fetch >= 0x200 else touched[fetch][0] if fetch < len(touched) else 0x200
    eip = (page << PAGE_SHIFT) | offset
    a, b = build(), build()
    assert a.ex is not None
    try:
        got: Any = a.ex._lookup(eip, 64).key[0]
    except PageFault as f:
        got = ("#PF", f.error_code, f.address)
    try:
        want: Any = b.mmu.translate(eip)
    except PageFault as f:
        want = ("#PF", f.error_code, f.address)
    assert got == want
    assert a.mmu.tlb == b.mmu.tlb


@settings(max_examples=60, deadline=None)
@given(back=st.integers(1, 9), filler=st.integers(0, 3))
def test_the_eip_map_names_both_pages_of_a_block_that_goes_on_past_its_page(
        back: int, filler: int) -> None:
    """Blocks starting ``back`` bytes before a page's end (their first instruction or a
    later one crossing it) are named on the pages of their first and last bytes, and
    on no other, as ``_map_eip`` names them."""
    target = CODE + 0x1000 - back
    code = bytearray(asm(f"jmp {target:#x}\n"))
    body = asm("nop\n" * filler + "mov $0x12345678, %eax\n mov $0x9abcdef0, %ebx\n hlt\n")
    image = code + bytes(0x1000 - back - len(code)) + body
    m = Machine(bytes(image))
    assert m.ex is not None
    m.run(100)
    ex = m.ex
    want: dict[int, set[int]] = {}
    for by_eip in ex._by_eip_maps:
        for eip, blk in by_eip.items():
            first = eip >> PAGE_SHIFT
            last = ((eip + max(blk.length, 1) - 1) & 0xFFFFFFFF) >> PAGE_SHIFT
            want.setdefault(first, set()).add(eip)
            want.setdefault(last, set()).add(eip)
    assert ex._eip_pages == want
    assert any(len(v) and k == (CODE >> PAGE_SHIFT) + 1 for k, v in want.items())


def test_what_delivery_reads_of_an_exception_is_what_its_class_is() -> None:
    """Delivery asks an exception's class attributes what it once asked ``isinstance``:
    software interrupts (gate DPL checked) are ``int n``, ``int3`` and ``into``, the
    external event (EXT) is an acknowledged interrupt, CR2 is loaded for #PF only."""
    from pvframe.executor import faults

    classes = [c for c in vars(faults).values()
               if isinstance(c, type) and issubclass(c, faults.GuestException)]
    assert len(classes) >= 15
    for cls in classes:
        assert cls.software == issubclass(
            cls, faults.SoftwareInterrupt | faults.Breakpoint | faults.Overflow), cls
        assert cls.external == issubclass(cls, faults.ExternalInterrupt), cls
        assert cls.sets_cr2 == issubclass(cls, faults.PageFault), cls
