"""Privilege levels: CPL3 code, returns to an outer level, interrupts from CPL3 through the
TSS stack, privileged instructions, IOPL and the I/O bitmap, U/S and R/W page checks.

Each transition Unicorn can run is diffed against it (state at the first exception, see
:mod:`rings`); delivery from CPL3 (which Unicorn leaves to the host) is checked against
Intel SDM Vol. 3A §6.12.1 by hand.
"""

from __future__ import annotations

import struct

import pytest
from asm import asm
from conftest import CODE, GDT, IDT, descriptor, gate
from hypothesis import given, note, settings
from hypothesis import strategies as st
from rings import (
    KSTACK,
    TSS,
    TSS_SEL,
    UCS,
    UDS,
    USTACK,
    first_event,
    first_event_unicorn,
    ring_machine,
    ring_unicorn,
)

from pvframe.executor import faults
from pvframe.executor.faults import GuestException, InvalidTSS, PageFault, StackFault

#: CPL0 prologue: load TR, then iret to ``user`` at CPL3 with EFLAGS = ``{fl}``
TO_USER_IRET = f"""
 mov ${TSS_SEL}, %ax
 ltr %ax
 pushl ${UDS}
 pushl ${USTACK:#x}
 pushl ${{fl}}
 pushl ${UCS}
 pushl $user
 iret
user:
"""

#: the same with a far return to the outer level
TO_USER_LRET = f"""
 mov ${TSS_SEL}, %ax
 ltr %ax
 pushl ${UDS}
 pushl ${USTACK:#x}
 pushl ${UCS}
 pushl $user
 lret
user:
"""


def user_program(body: str, fl: int = 0x2, how: str = "iret", pre: str = "") -> bytes:
    head = TO_USER_IRET.format(fl=hex(fl)) if how == "iret" else TO_USER_LRET
    return asm(pre + head + body)


def both(code: bytes, allowed_ports: tuple[int, ...] = ()) -> tuple[object, object]:
    m = ring_machine(code, allowed_ports)
    u = ring_unicorn(code, allowed_ports)
    mine = first_event(m)
    ref = first_event_unicorn(u)
    assert mine is not None and ref is not None
    return (mine[0], mine[1]), ref


# ---------------------------------------------------------------- transitions vs Unicorn
@pytest.mark.parametrize("how", ["iret", "lret"])
def test_return_to_cpl3_nulls_kernel_data_segments_like_unicorn(how: str) -> None:
    """iret/lret to CPL3: CS/SS/ESP from the frame, DS/ES/FS/GS (kernel DPL0 data) null."""
    code = user_program(" mov $7, %ebx\n mov %ds, %ecx\n hlt\n", how=how)
    mine, ref = both(code)
    assert mine == ref
    vector, state = mine  # type: ignore[misc]
    assert vector == 13 and state["cs"] == UCS and state["ss"] == UDS and state["ds"] == 0
    assert state["esp"] == USTACK and state["ecx"] == 0


def test_lret_imm16_to_outer_level_releases_both_stacks_like_unicorn() -> None:
    code = asm(f"""
 mov ${TSS_SEL}, %ax
 ltr %ax
 pushl ${UDS}
 pushl ${USTACK:#x}
 pushl $0x11111111
 pushl $0x22222222
 pushl ${UCS}
 pushl $user
 lret $8
user:
 mov %esp, %ebx
 hlt
""")
    mine, ref = both(code)
    assert mine == ref
    assert mine[1]["ebx"] == USTACK + 8  # type: ignore[index]


PRIVILEGED = [
    "hlt", "cli", "sti", "clts", "wbinvd", "invd", "mov %cr0, %eax", "mov %eax, %cr3",
    "mov %cr4, %eax", "mov %dr7, %eax", "mov %eax, %dr0", "lgdt (0x100)", "lidt (0x100)",
    "lldt %ax", "ltr %ax", "lmsw %ax", "rdmsr", "wrmsr", "invlpg (0x100)",
    "mov $0x10, %ax\n mov %ax, %ds",
]


@pytest.mark.parametrize("insn", PRIVILEGED)
def test_privileged_instruction_at_cpl3_is_gp_like_unicorn(insn: str) -> None:
    code = user_program(f" mov $0x3f8, %edx\n mov ${UDS}, %ax\n mov %ax, %ds\n mov %ax, %es\n {insn}\n int3\n")
    mine, ref = both(code)
    assert mine == ref
    assert mine[0] == 13  # type: ignore[index]


def test_rdpmc_at_cpl3_is_gp_without_cr4_pce() -> None:
    """SDM Vol. 2B RDPMC: #GP(0) at CPL > 0 when CR4.PCE = 0; with PCE the ``read_pmc``
    hook answers (Unicorn 2.1.4 refuses rdpmc outright, so this one is checked alone)."""
    for cr4, vector in ((0, 13), (0x100, 3)):
        code = user_program(" xor %ecx, %ecx\n rdpmc\n int3\n",
                            pre=f" mov ${cr4}, %eax\n mov %eax, %cr4\n")
        m = ring_machine(code)
        m.hooks.read_pmc = lambda counter: 0x1234  # type: ignore[method-assign]
        ev = first_event(m)
        assert ev is not None and ev[0] == vector
        if vector == 3:
            assert ev[1]["eax"] == 0x1234


def test_rdtsc_at_cpl3_faults_only_with_cr4_tsd_like_unicorn() -> None:
    for cr4, vector in ((0, 3), (0x4, 13)):
        code = user_program(" rdtsc\n xor %eax, %eax\n xor %edx, %edx\n int3\n",
                            pre=f" mov ${cr4}, %eax\n mov %eax, %cr4\n")
        mine, ref = both(code)
        assert mine == ref and mine[0] == vector  # type: ignore[index]


IO_INSNS = ["in $0x60, %al", "out %al, $0x80", "inl (%dx), %eax", "outsb", "insb", "outw %ax, (%dx)"]


@pytest.mark.parametrize("insn", IO_INSNS)
def test_io_at_cpl3_without_iopl_or_bitmap_is_gp(insn: str) -> None:
    """SDM Vol. 1 §19.5.2 / Vol. 2 IN, OUT, INS, OUTS: CPL > IOPL and the port's bit set in
    the I/O bitmap -> #GP(0), nothing transferred. (Unicorn 2.1.4 performs I/O at CPL3
    whatever IOPL and the bitmap say: tests/test_unicorn_ref.py, so no diff here.)"""
    code = user_program(f" mov $0x61, %edx\n mov ${UDS}, %ax\n mov %ax, %ds\n mov %ax, %es\n"
                        f" mov $0x3000, %esi\n mov $0x3000, %edi\n {insn}\n int3\n")
    m = ring_machine(code)
    ev = first_event(m)
    assert ev is not None and ev[0] == 13 and ev[2].error_code == 0
    assert m.env.io == []


@pytest.mark.parametrize("how", ["iopl3", "bitmap"])
def test_io_at_cpl3_allowed_by_iopl_or_the_tss_bitmap(how: str) -> None:
    """``out``/``in`` at CPL3 pass with IOPL=3, or with the port's bits clear in the I/O
    bitmap (what Linux 6.1's iopl(3) does); a 2-byte access needs both ports' bits."""
    fl = 0x3002 if how == "iopl3" else 0x2
    ports = () if how == "iopl3" else (0x70, 0x71, 0x80)
    code = user_program(" mov $0x55, %al\n out %al, $0x80\n out %ax, $0x70\n mov $1, %ebx\n"
                        " out %ax, $0x71\n int3\n", fl=fl)
    m = ring_machine(code, ports)
    ev = first_event(m)
    assert ev is not None
    if how == "iopl3":
        assert ev[0] == 3
        assert [e[:3] for e in m.env.io] == [("out", 0x70, 2), ("out", 0x71, 2)]
    else:  # port 0x72 is denied: the word access at 0x71 faults
        assert ev[0] == 13 and ev[1]["ebx"] == 1
        assert [e[:3] for e in m.env.io] == [("out", 0x70, 2)]
    assert ("io_delay",) in m.hooks.calls


def test_io_bitmap_beyond_the_tss_limit_is_gp() -> None:
    """The two bitmap bytes read must lie within the TSS limit (SDM Vol. 1 §19.5.2)."""
    code = user_program(" out %al, $0x70\n int3\n")
    m = ring_machine(code, (0x70,))
    m.memory.write_bytes(GDT + TSS_SEL, descriptor(TSS, 0x68 + (0x70 >> 3), 0x89, 0x0))
    ev = first_event(m)
    assert ev is not None and ev[0] == 13


def test_cli_sti_at_cpl3_with_iopl3_and_popf_rules_like_unicorn() -> None:
    """popf at CPL3: IOPL never changes; IF changes only when CPL <= IOPL."""
    for fl in (0x202, 0x3202):
        code = user_program(" pushl $0x0\n popf\n pushf\n popl %ebx\n pushl $0x3ed7\n popf\n"
                            " pushf\n popl %ecx\n int3\n", fl=fl)
        mine, ref = both(code)
        assert mine == ref, hex(fl)
    code = user_program(" cli\n pushf\n popl %ebx\n sti\n pushf\n popl %ecx\n int3\n", fl=0x3002)
    mine, ref = both(code)
    assert mine == ref


def test_iret_at_cpl3_to_the_same_level_like_unicorn() -> None:
    code = user_program(" pushl $0x3ed7\n pushl $0x2b\n pushl $next\n iret\nnext:\n pushf\n popl %ebx\n"
                        " int3\n", fl=0x202)
    mine, ref = both(code)
    assert mine == ref


def test_iret_to_inner_level_from_cpl3_is_gp_like_unicorn() -> None:
    code = user_program(" pushl $0x2\n pushl $0x08\n pushl $next\n iret\nnext:\n int3\n")
    mine, ref = both(code)
    assert mine == ref and mine[0] == 13  # type: ignore[index]


SYSENTER_SETUP = f"""
 mov ${TSS_SEL}, %ax
 ltr %ax
 mov $0x174, %ecx
 mov $0x18, %eax
 xor %edx, %edx
 wrmsr
 mov $0x175, %ecx
 mov ${KSTACK:#x}, %eax
 wrmsr
 mov $0x176, %ecx
 mov $kentry, %eax
 wrmsr
 pushl $0x202
 popf
 mov ${USTACK:#x}, %ecx
 mov $user, %edx
 sysexit
"""


def test_sysexit_to_cpl3_like_unicorn_and_sysenter_back() -> None:
    """SYSEXIT: CS/SS = SYSENTER_CS + 16/24 with RPL 3, ESP = ECX, EIP = EDX (diffed against
    Unicorn); SYSENTER: CS/SS = SYSENTER_CS/+8, ESP/EIP from the MSRs, VM IF RF cleared
    (SDM Vol. 2B; Unicorn 2.1.4 treats sysenter as a host syscall hook and only skips it,
    so that half is checked by hand)."""
    mine, ref = both(asm(SYSENTER_SETUP + "user:\nkentry:\n int3\n"))
    assert mine == ref
    state = mine[1]  # type: ignore[index]
    assert (state["cs"], state["ss"], state["esp"]) == (UCS, UDS, USTACK)
    code = asm(SYSENTER_SETUP + "user:\n mov $7, %eax\n sysenter\n"
               ".org 0x200\nkentry:\n mov %esp, %ebx\n int3\n")
    ev = first_event(ring_machine(code))
    assert ev is not None
    state = ev[1]
    assert (state["cs"], state["ss"], state["ebx"], state["eip"]) == (0x18, 0x20, KSTACK, CODE + 0x203)
    assert state["eflags"] & 0x200 == 0 and state["eax"] == 7


def test_sysexit_at_cpl3_and_a_null_sysenter_cs_are_gp() -> None:
    code = user_program(" sysexit\n")
    m = ring_machine(code)
    ev = first_event(m)
    assert ev is not None and ev[0] == 13 and ev[2].error_code == 0
    m = ring_machine(asm(" sysenter\n"))  # SYSENTER_CS = 0
    ev = first_event(m)
    assert ev is not None and ev[0] == 13 and ev[1]["cs"] == 0x08


# ---------------------------------------------------------------- delivery from CPL3 (SDM)
KERNEL = """
 .org 0x800
k80:                      # int $0x80: record the frame, return
 mov %esp, %ebx
 mov %ss, %ecx
 mov 16(%esp), %esi      # user SS
 mov 12(%esp), %edi      # user ESP
 add $1, %eax
 iret
 .org 0x900
kgp:                      # #GP: error code to edx, frame to registers, exit
 popl %edx
 mov %esp, %ebp
 mov 4(%esp), %esi        # faulting CS
 mov $0x10, %ax
 mov %ax, %ds
 mov $0xf4, %dx
 mov $0x42, %al
 out %al, (%dx)
"""


def kernel_machine(body: str, fl: int = 0x2, dpl80: int = 3) -> object:
    code = user_program(body + "\n" + KERNEL, fl=fl)
    m = ring_machine(code)
    m.memory.write_bytes(IDT + 8 * 0x80, gate(CODE + 0x800, 0x08, 0xE, dpl80))
    m.memory.write_bytes(IDT + 8 * 13, gate(CODE + 0x900, 0x08, 0xE, 0))
    return m


def test_int80_from_cpl3_switches_to_the_tss_stack_and_iret_returns() -> None:
    """int $0x80 through a DPL3 gate: SS:ESP from TSS.ss0:esp0, frame SS ESP EFLAGS CS EIP
    pushed there (SDM Vol. 3A §6.12.1 Figure 6-4); iret returns to CPL3 and its stack."""
    m = kernel_machine(" mov $5, %eax\n mov %esp, %edx\n int $0x80\n mov %eax, %ebp\n"
                       " mov %ss, %edx\n hlt\n")
    m.run(1000)
    cpu = m.cpu
    assert m.env.stopped == ("exit", 0x42)
    # from the #GP of the final user hlt
    assert cpu.ebp == KSTACK - 20  # GP handler: error code popped, EIP CS EFLAGS ESP SS left
    # int 0x80 handler's view (kept in registers across the return)
    assert cpu.ebx == KSTACK - 20 and cpu.ecx == 0x10 and cpu.edi == USTACK
    assert struct.unpack("<5I", m.memory.read_bytes(KSTACK - 20, 20))[1:] == (UCS, 0x2, USTACK, UDS)


def test_int80_through_dpl0_gate_from_cpl3_is_gp_with_the_idt_error_code() -> None:
    m = kernel_machine(" int $0x80\n", dpl80=0)
    m.run(1000)
    assert m.env.stopped == ("exit", 0x42)
    # the error code was popped into edx before edx became the port number: read the frame
    err = m.memory.read_u32(KSTACK - 24)
    assert err == 0x80 * 8 + 2
    assert m.memory.read_u32(KSTACK - 16) == UCS  # delivered from CPL3: stack switched


def test_exceptions_from_cpl3_ignore_the_gate_dpl() -> None:
    """#GP from user hlt goes through the DPL0 #GP gate (exceptions ignore gate DPL)."""
    m = kernel_machine(" hlt\n")
    m.run(1000)
    assert m.env.stopped == ("exit", 0x42)
    assert m.memory.read_u32(KSTACK - 24) == 0  # #GP(0)
    assert m.cpu.esi == UCS


def _deliver_int80_from_cpl3(m: object) -> BaseException:
    """Run to the user's int $0x80 (stopped before delivery), then deliver it once."""
    ev = first_event(m)  # type: ignore[arg-type]
    assert ev is not None and ev[1]["cs"] == UCS
    with pytest.raises(GuestException) as info:
        faults._deliver_once(m.ex, ev[2])  # type: ignore[attr-defined]
    return info.value


def test_delivery_with_a_tss_too_short_for_ss0_is_ts_with_the_tss_selector() -> None:
    m = kernel_machine(" int $0x80\n")
    m.memory.write_bytes(GDT + TSS_SEL, descriptor(TSS, 8, 0x89, 0x0))  # esp0 fits, ss0 not
    exc = _deliver_int80_from_cpl3(m)
    assert isinstance(exc, InvalidTSS) and exc.error_code == TSS_SEL
    assert m.cpu.cs.selector == UCS and m.cpu.esp == USTACK  # nothing changed


@pytest.mark.parametrize(("ss0", "fault", "code"), [
    (0x2B, InvalidTSS, 0x28),  # RPL 3 != DPL 0 of the handler
    (0x08, InvalidTSS, 0x08),  # a code segment
    (0x00, InvalidTSS, 0x00),  # null
    (0x33 & ~3, InvalidTSS, 0x30),  # DPL 3 data
])
def test_delivery_with_a_bad_ss0_is_ts_with_the_selector(ss0: int, fault: type, code: int) -> None:
    m = kernel_machine(" int $0x80\n")
    m.memory.write_bytes(TSS + 8, struct.pack("<I", ss0))
    exc = _deliver_int80_from_cpl3(m)
    assert isinstance(exc, fault) and exc.error_code == code


def test_delivery_with_a_not_present_ss0_is_ss() -> None:
    m = kernel_machine(" int $0x80\n")
    m.memory.write_bytes(GDT + 0x10, descriptor(0, 0xFFFFF, 0x13))  # kernel data, P=0
    exc = _deliver_int80_from_cpl3(m)
    assert isinstance(exc, StackFault) and exc.error_code == 0x10


# ---------------------------------------------------------------- paging at CPL3 / CR0.WP
PD, PT = 0x40000, 0x41000
DATA_PAGE = 0x50000


def paging_prologue(data_flags: int, wp: bool) -> str:
    """Identity map of the low 4 MiB, user+writable, except DATA_PAGE (``data_flags``)."""
    cr0 = 0x80000011 | (0x10000 if wp else 0)
    return f"""
 movl $0x1234, {DATA_PAGE + 0x10:#x}      # (RAM that holds data: it has fast-map views)
 mov ${PT | 0x7:#x}, %eax
 mov %eax, {PD:#x}
 mov $0, %ecx
1: mov %ecx, %eax
 shl $12, %eax
 or $0x7, %eax
 mov %eax, {PT:#x}(,%ecx,4)
 inc %ecx
 cmp $1024, %ecx
 jne 1b
 movl ${DATA_PAGE | data_flags:#x}, {PT + 4 * (DATA_PAGE >> 12):#x}
 mov ${PD:#x}, %eax
 mov %eax, %cr3
 mov ${cr0:#x}, %eax
 mov %eax, %cr0
"""


@settings(max_examples=40, deadline=None)
@given(us=st.booleans(), rw=st.booleans(), cpl3=st.booleans(), write=st.booleans(), wp=st.booleans(),
       warm=st.booleans())
def test_page_protection_by_cpl_and_wp_like_unicorn(us: bool, rw: bool, cpl3: bool, write: bool, wp: bool,
                                                      warm: bool) -> None:
    """U/S and R/W of the PTE against CPL and CR0.WP (SDM Vol. 3A §4.6), diffed against
    Unicorn; ``warm`` first touches the page at CPL0 so that it sits in the executor's
    supervisor fast maps (the user-mode check must still fault)."""
    flags = 0x1 | (0x2 if rw else 0) | (0x4 if us else 0)
    access = f"movl $0x99, {DATA_PAGE + 0x10:#x}" if write else f"mov {DATA_PAGE + 0x10:#x}, %ebx"
    warmup = (f" mov {DATA_PAGE + 0x10:#x}, %esi\n" * 3) if warm else ""
    pre = paging_prologue(flags, wp) + warmup
    if cpl3:
        code = user_program(f" {access}\n {access}\n int3\n", pre=pre)
    else:
        code = asm(pre + f" {access}\n {access}\n int3\n")
    note(f"flags={flags:#x} cpl3={cpl3} write={write} wp={wp}")
    m = ring_machine(code)
    u = ring_unicorn(code)
    mine = first_event(m)
    ref = first_event_unicorn(u)
    assert mine is not None and ref is not None
    assert (mine[0], mine[1]) == ref
    faults = (cpl3 and (not us or (write and not rw))) or (not cpl3 and write and not rw and wp)
    assert mine[0] == (14 if faults else 3)
    if faults:
        exc = mine[2]
        assert isinstance(exc, PageFault)
        assert exc.address == DATA_PAGE + 0x10
        assert exc.error_code == 1 | (2 if write else 0) | (4 if cpl3 else 0)
        assert u.uc.reg_read(__import__("unicorn").x86_const.UC_X86_REG_CR2) == DATA_PAGE + 0x10


def test_user_fetch_of_a_supervisor_page_faults_even_when_the_block_is_cached() -> None:
    """Code run at CPL0 first (translated, in the supervisor EIP map) on a supervisor-only
    page is then called from CPL3: #PF(U=1, P=1) at that EIP, CR2 = EIP (SDM §4.6)."""
    ksub = CODE + 0x1000
    pre = (paging_prologue(0x7, False)
           + f" movl ${ksub | 0x3:#x}, {PT + 4 * (ksub >> 12):#x}\n"
           + f" mov ${ksub:#x}, %eax\n call *%eax\n call *%eax\n")
    code = user_program(f" mov ${ksub:#x}, %eax\n call *%eax\n int3\n .org 0x1000\n ret\n", pre=pre)
    m = ring_machine(code)
    ev = first_event(m)
    assert ev is not None
    vector, state, exc = ev
    assert vector == 14 and state["eip"] == ksub and state["cs"] == UCS
    assert isinstance(exc, PageFault) and exc.error_code == 5 and exc.address == ksub
    u = ring_unicorn(code)
    assert first_event_unicorn(u) == (vector, state)


# ---------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None)
@given(port=st.integers(0, 0xFFFF), size=st.sampled_from([1, 2, 4]), iopl=st.integers(0, 3),
       allowed=st.lists(st.integers(-3, 3), max_size=4))
def test_io_permission_at_cpl3_follows_iopl_and_every_bitmap_bit(port: int, size: int, iopl: int,
                                                                 allowed: list[int]) -> None:
    """An ``in`` of ``size`` bytes at ``port`` from CPL3 is allowed iff IOPL = 3 or every one
    of the ``size`` ports' bits is clear (SDM Vol. 1 §19.5.2); the bitmap's last byte is
    the terminating 0xFF, so ports near 0xFFFF stay denied."""
    ports = tuple(sorted({(port + d) & 0xFFFF for d in allowed}))
    reg = {1: "%al", 2: "%ax", 4: "%eax"}[size]
    code = user_program(f" mov ${port:#x}, %edx\n in (%dx), {reg}\n int3\n", fl=0x2 | (iopl << 12))
    m = ring_machine(code, ports)
    ev = first_event(m)
    assert ev is not None
    ok = iopl == 3 or all(((port + k) & 0xFFFF) in ports and port + k <= 0xFFFF for k in range(size))
    note(f"ports={ports} ok={ok}")
    assert ev[0] == (3 if ok else 13)
    assert bool(m.env.io) == ok


@settings(max_examples=40, deadline=None)
@given(popped=st.integers(0, 0xFFFFFFFF), iopl=st.integers(0, 3), use_iret=st.booleans())
def test_popf_and_iret_flag_rules_at_cpl3_like_unicorn(popped: int, iopl: int, use_iret: bool) -> None:
    """popf/iret at CPL3 (SDM Vol. 2B POPF, Vol. 2A IRET): IOPL never changes, IF only when
    IOPL = 3, VIF/VIP never, RF only through iret; diffed against Unicorn with random
    EFLAGS images."""
    popped &= ~(0x20000 | 0x100)  # (VM: virtual-8086 mode is not modelled; TF traps at once)
    if use_iret:
        body = f" pushl ${popped:#x}\n pushl ${UCS}\n pushl $1f\n iret\n1:\n pushf\n popl %ebx\n int3\n"
    else:
        body = f" pushl ${popped:#x}\n popf\n pushf\n popl %ebx\n int3\n"
    mine, ref = both(user_program(body, fl=0x202 | (iopl << 12)))
    # Unicorn's pushf copies RF into the image; the SDM (PUSHF) says it is stored clear
    ref[1]["ebx"] &= ~0x10000  # type: ignore[index]
    assert mine == ref
    assert (mine[1]["ebx"] >> 12) & 3 == iopl  # type: ignore[index]
    assert not mine[1]["ebx"] & 0x10000  # type: ignore[index]


def test_external_interrupt_at_cpl3_switches_stacks_and_returns() -> None:
    """A device interrupt taken at CPL3 goes through a DPL0 gate (hardware interrupts
    ignore the gate DPL), on the TSS's stack; iret resumes the
    user loop where it was (SDM Vol. 3A §6.12.1)."""
    body = " xor %eax, %eax\n1: inc %eax\n cmp $1000, %eax\n jne 1b\n mov %eax, %edi\n hlt\n"
    m = kernel_machine(body + " .org 0x700\n mov %esp, %ebx\n mov 4(%esp), %ecx\n iret\n", fl=0x202)
    m.memory.write_bytes(IDT + 8 * 0x20, gate(CODE + 0x700, 0x08, 0xE, 0))
    m.run(200)  # into the user loop
    assert m.cpu.cs.selector == UCS
    m.env.pending.append(0x20)
    m.run(20_000)
    assert m.env.stopped == ("exit", 0x42)  # the user hlt's #GP, after the loop finished
    assert m.cpu.ebx == KSTACK - 20 and m.cpu.ecx == UCS and m.cpu.edi == 1000
