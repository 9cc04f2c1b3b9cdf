"""RadFM in the hospital's imaging pipeline: a DICOM node (``radfm node``) and a MONAI Deploy application.

The node takes studies from the PACS and sends reports back::

    PACS --C-STORE--> storage_scp.StorageSCP      allow-listed callers, each instance checked, spooled to disk
                        -> job_queue.JobQueue       SQLite: instances, stable studies -> jobs, deliveries
    node_runner.NodeRunner (N threads)              a stable study's series chosen by series_rules
        -> radfm.serving.request.RequestPath.run_blocking(AnswerRequest)   the one request path
        -> radfm.interop.sr.build_sr                our Comprehensive SR, referencing the source series
        -> destinations (C-STORE / STOW-RS)         retried with backoff until delivered or failed

Modules: ``node_config`` (the one JSON file), ``job_queue``, ``storage_scp``, ``series_rules``,
``destinations``, ``node_runner``, ``dicomweb_pull``, ``cli`` (``radfm node run|status``);
``deploy_app`` + ``deploy_rules`` (the MONAI Deploy application, ``map/`` its packaging files);
``synthetic`` (made-up CT and X-ray studies) and ``orthanc_lab`` (Orthanc + node processes for
tests and ``scripts/bench_node.py``).
Nothing is imported here so that ``import radfm`` stays light.
"""
