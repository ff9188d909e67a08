"""pvframe's i386 executor: pyvex-lifted blocks compiled to Python, plus system instructions
routed to the bound hooks.

Public API
----------
``Executor(cpu, memory, mmu, hooks, env)``
    ``run(limit) -> str | None``: run until ``cpu.icount == limit`` (returns None) or a stop
    reason (``executor.stop(reason)`` / ``env.stop`` through the machine, ``"triple-fault"``,
    ``"halted"`` when the CPU waits in ``hlt`` with nothing to wake it, or
    ``"unsupported: ..."``). ``interrupt_return()``: native iret semantics for the ``iret``
    hook. ``stop(reason, exit_code=None)``. ``flush_translations()``. ``entry_points``:
    physical address -> handler; fetching an instruction there runs the handler instead
    (the paravirt call ROM's entries, :mod:`pvframe.pvcall`). ``ring0``: None, or the
    owner of ring 0 when the guest kernel runs outside it (a Xen PV kernel at CPL1): every
    exception, interrupt and ``int n`` is handed to it instead of the IDT
    (``pvframe_xen.pv.ring0``).
``CPUState`` (``pvframe.executor.state``), ``PhysicalMemory`` (``pvframe.platform.memory``),
``MMU`` (``pvframe.platform.mmu``: ``write_cr0/3/4``, ``invlpg``, ``flush_all``), the
exception classes in ``pvframe.executor.faults``, the protocols in ``pvframe.executor.env``.

Layering (angr's VEX engine style): ``lift.py`` (pyvex + cutting before system
instructions) / ``translate/`` (IR -> Python source, one room per IR node family: expressions,
statements, memory, exits, helper calls, x87; a handler table per node kind,
``flags.py`` for the ``x86g_*`` helpers) / ``system.py`` (iced-x86 decoded system
instructions -> hooks) / ``faults.py`` (IDT delivery) / ``privilege.py`` (CPL changes:
TSS stacks, outer returns, I/O permission) / ``tasks.py`` (hardware task switches) / ``cpu.py`` (cache and dispatch) /
``codecache.py`` (what a compiled block keeps in host memory, the shared code cache) /
``relocate.py`` (translations of the same bytes moved to another address) /
``carryover.py`` (a released machine's translations taken over by the next machine).

What the executor can execute (what a CPUID hook may advertise)
---------------------------------------------------------------
Flat 32-bit protected mode at CPL0 and CPL3 (``privilege.py``: ``iret``/``retf`` to an
outer level, interrupts and exceptions from CPL3 through the TSS's SS0:ESP0, ``int n``
gate DPL checks, privileged instructions #GP(0) at CPL > 0, IOPL and the TSS I/O bitmap,
U/S and R/W page checks at CPL3 and CR0.WP at CPL0; user-mode instructions call no hook):
the integer instruction set libVEX decodes (including
cmpxchg8b, bswap, bt*, shld/shrd, cmov, setcc, string instructions with rep, BCD adjusts,
xadd, cpuid/rdtsc/rdmsr/wrmsr via hooks), 4 KiB and 4 MiB (PSE) 32-bit paging, PAE paging
(4 KiB and 2 MiB pages, PDPTEs loaded at CR3/CR0/CR4 writes, reserved-bit #PF; no NX), PGE,
TSC via the hook, and the **x87 FPU as libVEX models it** (``fpu.py``: 8 registers in double
precision, tags full/empty, rounding mode, C3..C0; loads/stores of every format including
80-bit, arithmetic, compares, fnstsw/fnstcw/fldcw, fninit, fnsave/frstor, fnstenv/fldenv;
#NM before any effect if CR0.EM or CR0.TS, fwait #NM if CR0.MP and CR0.TS; the few x87
instructions libVEX cannot decode, e.g. fbld/fbstp/fdecstp, and the SSE3 fisttp are #UD). An address-size
prefix (0x67) on an instruction without a memory operand runs as without it. Not
executable: **MMX/SSE/SSE2+** (#UD if CR0.EM, #NM if CR0.TS, else #UD; fxsave/fxrstor/ldmxcsr too),
POPCNT, RDRAND, AVX, 16-bit addressing (0x67 prefix on a memory operand, ``jcxz``/``loop``), real and virtual-8086 mode,
NX/XD (no IA32_EFER), 16-bit TSSs and gates, task switches to virtual-8086
mode (32-bit hardware task switches run: ``tasks.py``, ljmp/lcall to a TSS or task gate,
``iret`` with NT=1, IDT task gates), call gates (so no far call/jmp to an inner level;
CPL 1 and 2 stacks are read from the TSS like CPL0's, untested), ``iretw``/16-bit far
pointers (#UD), ``syscall`` (#UD; ``sysenter``/``sysexit`` run, the SYSENTER MSRs read
through ``read_msr``), debug
register breakpoints (DR0-7 are stored through the hooks, only EFLAGS.TF single-step and
``int1`` raise #DB). Non-zero segment bases are honoured for FS/GS only; loading one into
CS/DS/ES/SS stops the machine (``"unsupported: non-zero base in ds"``); segment limits are
only checked on FS/GS-prefixed accesses (start byte only), never on instruction fetch.
Lock prefixes are accepted where libVEX accepts them (single CPU: no atomicity issue).
A CPUID hook should therefore not advertise FXSR,
MMX, SSE*, NX, POPCNT; it may advertise FPU, PSE, PAE, PGE, TSC, MSR, CX8, CMOV, DE, SEP.

EFLAGS and the masked flags
---------------------------
The arithmetic flags follow libVEX: architecturally *undefined* flags get libVEX's value,
which can differ from a given silicon (and from Unicorn/QEMU): AF after logic ops, shifts,
rotates and multiplies; OF after shifts/rotates by more than 1; SF/ZF/PF/AF after
MUL/IMUL; all six after DIV/IDIV (unchanged here); OF after BCD adjusts and AAA/AAS
S/Z/P/O; CF/OF/AF after AAM/AAD; flags other than ZF after BSF/BSR; CF after SHL/SHR by
more than the operand width. The differential tests mask exactly these.

Translation and caching
-----------------------
Blocks are lifted with libVEX (``vexir.py`` reads its C IR directly; opt_level 1 with
every register updated at each instruction boundary, so faults stay precise), cut before every
instruction that is not plain integer code (classified from the opcode bytes), turned
into Python source (guest registers in locals, per-instruction commit so every fault is
precise and restartable) and compiled once. Superblocks follow direct jumps/calls and
predicted returns on the same page; blocks that branch to their own start loop inside the
compiled function. The cache key is (physical address, linear address, instruction
limit); a linear-EIP map in front of it is dropped on every MMU flush; stores to pages
holding translations (by the guest, devices or loaders) drop the overlapping blocks.

libVEX mis-lifts worked around here: ``xadd r,r`` with one register, ``aam imm8`` (any
base, #DE on 0), 8/16-bit ``div``/``idiv`` quotient overflow (#DE), plus the system
instructions of ``lift.py`` (libVEX ``priv/guest_x86_toIR.c``, pyvex 9.2.213).

Measured speed (``python -m pvframe.executor.bench``, 2 vCPU, CPython 3.11, Unicorn
2.1.4): ALU loop 16-18 M guest instr/s, array sum 7-12 M, RMW-with-carry loop 3-6 M,
call/ret-and-branch loop 4-6 M; Unicorn without hooks 30-80 M, Unicorn with a Python
per-instruction hook 1-2 M (so 3-16x faster than that).

Counting and time
-----------------
``cpu.icount`` counts retired instructions; a rep-prefixed string instruction counts one
per iteration (as libVEX lifts it and Unicorn counts). ``rdtsc`` is the ``read_tsc`` hook,
called in line from the translated block (its registers, EIP and ``icount`` stored first),
so a delay loop spinning on the TSC runs inside one block; nothing reads the host clock. ``env.interrupt_pending()`` is polled at every block boundary
when IF=1 outside an interrupt shadow; blocks end right after an instruction that touched
MMIO or port I/O, and at every deadline, so device interrupts are taken at the precise
instruction boundary. ``sti`` calls ``irq_enable()`` and opens a one-instruction shadow; a
``hlt`` inside that shadow calls ``safe_halt()`` instead of ``halt()``. After either hook
the CPU is halted (the hook may clear ``cpu.halted``); ``run`` returns ``"halted"`` until an
interrupt is pending.
"""

from pvframe.executor.cpu import Executor, StopExecution
from pvframe.executor.state import CPUState, Segment, SystemSegment, TableRegister

__all__ = ["CPUState", "Executor", "Segment", "StopExecution", "SystemSegment", "TableRegister"]
