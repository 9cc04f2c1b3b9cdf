"""DICOMweb pull mode: QIDO-RS finds new studies matching a filter, WADO-RS fetches them.

Each fetched instance goes through the same checks and spool as a C-STOREd one
(:meth:`StorageSCP.ingest <radfm.hospital.storage_scp.StorageSCP.ingest>`), so a pulled study
becomes a job once it is stable, exactly like a pushed one. A study is fetched once; the
``pulled`` table in the node's SQLite file remembers it across restarts.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from radfm.hospital.dicom_uid import is_dicom_uid
from radfm.hospital.node_config import NodeConfig
from radfm.hospital.storage_scp import StorageSCP

logger = logging.getLogger("radfm.node")


class DicomwebPull:
    def __init__(self, config: NodeConfig, scp: StorageSCP) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.config = config
        self.scp = scp
        self.client = DICOMwebClient(url=config.pull.url)
        self.client.set_http_retry_params(retry=False)  # a failed poll is simply tried at the next poll
        self.queue = scp.queue

    def new_studies(self) -> list[str]:
        """Study UIDs the QIDO-RS search returns that were not pulled before."""
        found = self.client.search_for_studies(search_filters=dict(self.config.pull.filter))
        uids = []
        for study in found:
            uid = (study.get("0020000D", {}).get("Value") or [None])[0]
            if not is_dicom_uid(uid):
                continue  # a malformed answer is skipped, not trusted
            if not self.queue.was_pulled(uid):
                uids.append(uid)
        return uids

    def poll_once(self) -> int:
        """Fetch every new study (WADO-RS) into the spool; returns how many instances were taken."""
        taken = 0
        for uid in self.new_studies():
            count = 0
            for dataset in self.client.iter_study(uid):
                fd, temp = tempfile.mkstemp(dir=self.queue.root / "tmp", suffix=".dcm")
                os.close(fd)
                try:
                    dataset.save_as(temp, enforce_file_format=True)
                    if self.scp.ingest(Path(temp), "DICOMweb") == 0:
                        count += 1
                finally:
                    os.unlink(temp)
            self.queue.mark_pulled(uid)
            logger.info("study %s: %d instance(s) pulled over DICOMweb", uid, count)
            taken += count
        return taken
