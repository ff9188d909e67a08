"""The C tier: hot regions (:mod:`pvframe.executor.region`) compiled to host machine code
through the system's C compiler and run in place of their Python function while IF=0.

=====================  ==================================================================
:mod:`.cgen`           VEX IR of a region's members -> one C function (semantics, exits,
                       precise state at a miss)
:mod:`.build`          finding the compiler, compiling to a shared object, loading it
:mod:`.runtime`        the state struct, the software TLB and its invalidation, the call
=====================  ==================================================================
"""
