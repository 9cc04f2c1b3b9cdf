"""The DICOM node (``radfm node``): studies from the PACS in, RadFM reports (SR) back.

    PACS --C-STORE--> storage_scp.StorageSCP      allow-listed callers, every byte counted, spooled to disk
                        -> job_queue.JobQueue       SQLite: instances, stable studies -> jobs, deliveries
    node_runner.NodeRunner (N threads)              a stable study's series chosen by radfm.dicom.series_rules
        -> radfm.answering.request.RequestPath.run_blocking(AnswerRequest)   the one request path
        -> radfm.dicom.sr.build_sr                  our Comprehensive SR, referencing the source series
        -> destinations (C-STORE / STOW-RS)         retried with backoff until delivered or failed

Modules: ``node_config`` (the one JSON file), ``job_queue``, ``storage_scp``, ``destinations``,
``node_runner``, ``dicomweb_pull`` (pull mode), ``cli`` (``radfm node run|status``).
Nothing is imported here so that ``import radfm`` stays light.
"""
