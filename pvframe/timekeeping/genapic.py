"""``struct genapic`` IPI hooks (Linux 2.6.22 ``include/asm-i386/genapic.h``,
``include/asm-i386/mach-default/mach_ipi.h``).

The backend provides two small callables: ``write_icr(icr_low, icr_high)`` (native: two
APIC register writes, high word first; VMI: ``APICWrite``) and ``read_apic_id()``
returning the APIC ID register. ``send_IPI_mask`` writes the ICR once per destination
(physical destination mode here, a simplification of mach-default's flat logical mode);
``send_IPI_allbutself`` / ``send_IPI_all`` use the ICR shorthands (``APIC_DEST_ALLBUT``
/ ``APIC_DEST_ALLINC``) unless ``no_broadcast`` is set or the vector is the NMI vector
(2), in which case they fall back to the mask form; ``allbutself`` does nothing with one
CPU online. ``send_IPI_self`` uses ``APIC_DEST_SELF``. The NMI vector is sent with
delivery mode NMI.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

APIC_DEST_SELF = 0x40000
APIC_DEST_ALLINC = 0x80000
APIC_DEST_ALLBUT = 0xC0000
APIC_DM_FIXED = 0x000
APIC_DM_NMI = 0x400
NMI_VECTOR = 2


def set_apic_dest_field(apicid: int) -> int:
    """``SET_APIC_DEST_FIELD``: the destination in ICR high bits 31..24."""
    return (apicid & 0xFF) << 24


def get_apic_id(value: int) -> int:
    """``GET_APIC_ID``: bits 31..24 of the APIC ID register."""
    return (value >> 24) & 0xFF


def prepare_icr(shortcut: int, vector: int) -> int:
    """``__prepare_ICR``: fixed delivery (NMI for vector 2) with a shorthand."""
    mode = APIC_DM_NMI if vector == NMI_VECTOR else APIC_DM_FIXED
    return mode | shortcut | (vector & 0xFF if vector != NMI_VECTOR else 0)


@attrs.define
class GenApic:
    """IPI sending over a backend-provided ICR write."""

    name: str
    write_icr: Callable[[int, int], None]
    read_apic_id: Callable[[], int]
    cpus_online: int = 1
    cpu_to_apicid: Callable[[int], int] = int
    no_broadcast: bool = False

    def apic_id(self) -> int:
        return get_apic_id(self.read_apic_id())

    def send_IPI_mask(self, mask: int, vector: int) -> None:
        """One ICR write per CPU in ``mask`` (bit n = CPU n)."""
        cpu = 0
        while mask >> cpu:
            if mask >> cpu & 1:
                self.write_icr(
                    prepare_icr(0, vector), set_apic_dest_field(self.cpu_to_apicid(cpu))
                )
            cpu += 1

    def send_IPI_allbutself(self, vector: int) -> None:
        if self.cpus_online <= 1:
            return
        if self.no_broadcast or vector == NMI_VECTOR:
            me = self._self_cpu()
            mask = ((1 << self.cpus_online) - 1) & ~(1 << me)
            self.send_IPI_mask(mask, vector)
        else:
            self.write_icr(prepare_icr(APIC_DEST_ALLBUT, vector), 0)

    def send_IPI_all(self, vector: int) -> None:
        if self.no_broadcast or vector == NMI_VECTOR:
            self.send_IPI_mask((1 << self.cpus_online) - 1, vector)
        else:
            self.write_icr(prepare_icr(APIC_DEST_ALLINC, vector), 0)

    def send_IPI_self(self, vector: int) -> None:
        self.write_icr(prepare_icr(APIC_DEST_SELF, vector), 0)

    def _self_cpu(self) -> int:
        me = self.apic_id()
        for cpu in range(self.cpus_online):
            if self.cpu_to_apicid(cpu) == me:
                return cpu
        return 0
