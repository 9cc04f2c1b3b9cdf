"""Clinical interoperability: CLI generation, DICOM SR export, the local service, big-model loading.

Modules: ``generate`` (``radfm generate``), ``sr`` (``radfm export-sr``), ``service``
(``radfm serve``), ``info`` / ``memory_plan`` (``radfm info``), ``bigmodel`` (dtype, device
maps, offload, bitsandbytes), ``answerer`` (scans + prompt -> text), ``uploads``, ``identity``.
Nothing is imported here so that ``radfm`` subcommands stay light.
"""
