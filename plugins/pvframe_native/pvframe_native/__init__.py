"""pvframe's native backend: every paravirt_ops entry as bare hardware performs it.

This is the reference every other backend is compared with, and the implementation every
other backend inherits for the ops it does not implement. One module per pv_ops group
(:mod:`.cpu`, :mod:`.irq`, :mod:`.apic`, :mod:`.time`, :mod:`.mmu`, :mod:`.init`); the
:class:`~pvframe_native.backend.NativeBackend` class combines them.
"""
