"""DICOM helpers shared by the CLI, the service, the node and the Deploy app.

``sr`` (our Comprehensive SR: ``build_sr``, ``radfm export-sr``), ``series_rules`` (which series of a
study get which prompt), ``dicom_uid`` (UID syntax), ``transfer_syntaxes`` (what we can decode).
Nothing is imported here so that ``import radfm`` stays light.
"""
