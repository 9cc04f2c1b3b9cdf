"""Clinical interoperability: CLI generation, DICOM SR export, the local service, conversion.

Modules: ``generate`` (``radfm generate``), ``sr`` (``radfm export-sr``), ``service``
(``radfm serve``), ``info`` / ``memory_plan`` (``radfm info``), ``convert`` (``radfm convert``),
``answerer`` (scans + prompt -> text), ``uploads``, ``identity``. Models load through
``radfm.load`` (``radfm/model/loading.py``).
Nothing is imported here so that ``radfm`` subcommands stay light.
"""
