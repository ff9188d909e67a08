"""Boot and set-up ops (pv_init_ops) of a kernel on bare hardware."""

from __future__ import annotations

from typing import Any

from pvframe.hookspecs import hookimpl


class InitOps:
    @hookimpl
    def pvop_arch_setup(self, machine: Any) -> None:
        """Nothing to do on bare hardware."""

    @hookimpl
    def pvop_memory_setup(self, machine: Any) -> str:
        """``machine_specific_memory_setup``: the firmware E820 map (here the multiboot
        memory map the loader built)."""
        return "BIOS-e820"

    @hookimpl
    def pvop_post_allocator_init(self, machine: Any) -> None:
        """Not set on native (2.6.23)."""

    @hookimpl
    def pvop_banner(self, machine: Any) -> None:
        machine.log("Booting paravirtualized kernel on bare hardware")
