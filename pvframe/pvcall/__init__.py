"""Guest-callable ``paravirt_ops``: the call ROM, call decoding, patch sites, call-site counts.

A guest reaches a hook in two ways: a privileged instruction the executor routes to it
(docs/architecture.md), or a *call* of the op, as a Linux 2.6.23 ``CONFIG_PARAVIRT``
kernel makes it (``call *(paravirt_ops + type*4)``). This package is the second way:

* :mod:`.layout`: the ROM a guest finds by its signature (the ``struct paravirt_ops``
  image in 2.6.23 member order and one entry point per op);
* :mod:`.calls`: a call's regparm(3) arguments decoded into the hook's units, the result
  returned as C returns it.

``docs/pvcalls.md`` is the guest author's page; ``pvframe/guests/paravirt.h`` the header.
"""

from pvframe.pvcall.calls import PVCallInterface, clobbers
from pvframe.pvcall.layout import ROM_BASE, SLOTS, entry_address, slot_of

__all__ = ["ROM_BASE", "SLOTS", "PVCallInterface", "clobbers", "entry_address", "slot_of"]
