"""What the ``pvframe`` command does, apart from the core it drives.

``cli`` is the command itself; each other module is one of its jobs: ``check`` (the
equivalence kit run from the command line), ``abi`` (the ABI coupling report), ``trace``
(Perfetto traces on the virtual-time line), ``replay`` (recordings), ``scaffold`` (a new
backend distribution), ``bench``, ``fuzz``, ``docs_gen`` (the hook reference) and ``doc_samples``
(the docs' sample outputs, made by running the commands). The core
(:mod:`pvframe.hookspecs`, :mod:`pvframe.plugins`, :mod:`pvframe.executor`,
:mod:`pvframe.platform`, :mod:`pvframe.timekeeping`, :mod:`pvframe.machine`) never imports
from here.
"""
