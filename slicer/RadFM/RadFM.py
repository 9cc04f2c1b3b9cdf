"""3D Slicer scripted module: ask the local RadFM service about the selected volumes.

The widget sends the checked volume nodes and a prompt to ``radfm serve`` (default
http://127.0.0.1:8765), shows the answer, keeps it in a text node saved with the scene, and
can store the DICOM SR the service returns. Volumes loaded from DICOM are sent as their
original DICOM files (so the SR can reference them); other volumes as temporary NIfTI files.
All request/response logic lives in ``RadFMLib/client.py`` (tested in CI without Slicer).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from RadFMLib import client

ANSWER_NODE_ATTRIBUTE = "RadFM.Answer"


class RadFM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "RadFM"
        parent.categories = ["Informatics"]
        parent.contributors = ["RadFM toolkit"]
        parent.helpText = (
            "Ask the RadFM radiology foundation model about the selected volumes through a local "
            "`radfm serve` service. Answers are machine generated and UNVERIFIED."
        )
        parent.acknowledgementText = "RadFM: Wu et al., generalist radiology foundation model."


class RadFMWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = RadFMLogic()
        self.lastAnswer = None
        form = qt.QFormLayout()
        self.layout.addLayout(form)

        self.urlEdit = qt.QLineEdit(client.DEFAULT_URL)
        form.addRow("Service URL:", self.urlEdit)
        self.volumeSelector = slicer.qMRMLCheckableNodeComboBox()
        self.volumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.volumeSelector.setMRMLScene(slicer.mrmlScene)
        self.volumeSelector.toolTip = "Volumes to send, in prompt order (one <image> each)"
        form.addRow("Volumes:", self.volumeSelector)
        self.promptEdit = qt.QPlainTextEdit()
        self.promptEdit.setPlaceholderText("e.g. Please caption this scan with findings. (<image> placeholders optional)")
        self.promptEdit.setMaximumHeight(80)
        form.addRow("Prompt:", self.promptEdit)
        self.maxTokens = qt.QSpinBox()
        self.maxTokens.setRange(1, 1024)
        self.maxTokens.setValue(256)
        form.addRow("Max new tokens:", self.maxTokens)
        self.srCheck = qt.QCheckBox("request a DICOM SR (volumes loaded from DICOM only)")
        form.addRow(self.srCheck)

        self.askButton = qt.QPushButton("Ask RadFM")
        self.askButton.connect("clicked(bool)", self.onAsk)
        form.addRow(self.askButton)
        self.answerView = qt.QTextBrowser()
        form.addRow("Answer:", self.answerView)
        self.saveSrButton = qt.QPushButton("Save DICOM SR…")
        self.saveSrButton.enabled = False
        self.saveSrButton.connect("clicked(bool)", self.onSaveSr)
        form.addRow(self.saveSrButton)
        self.layout.addStretch(1)

    def onAsk(self):
        volumes = [n for n in self.volumeSelector.checkedNodes()]
        prompt = self.promptEdit.toPlainText().strip()
        if not volumes or not prompt:
            slicer.util.errorDisplay("Check at least one volume and write a prompt.")
            return
        self.askButton.enabled = False
        try:
            with slicer.util.tryWithErrorDisplay("RadFM request failed.", waitCursor=True):
                answer, textNode = self.logic.ask(volumes, prompt, url=self.urlEdit.text,
                                                  max_new_tokens=self.maxTokens.value, want_sr=self.srCheck.checked)
                self.lastAnswer = answer
                self.answerView.setPlainText(textNode.GetText())
                self.saveSrButton.enabled = answer.sr is not None
                if self.srCheck.checked and answer.sr is None:
                    slicer.util.warningDisplay(f"No DICOM SR: {answer.sr_error}")
        finally:
            self.askButton.enabled = True

    def onSaveSr(self):
        if self.lastAnswer is None:
            return
        path = qt.QFileDialog.getSaveFileName(None, "Save DICOM SR", "radfm_report.dcm", "DICOM (*.dcm)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Saving the SR failed.", waitCursor=True):
            self.logic.storeSr(self.lastAnswer, path, importToDatabase=True)


class RadFMLogic(ScriptedLoadableModuleLogic):
    """Collect files for volume nodes, call the service, keep the answer in a text node."""

    def filesForVolume(self, volumeNode, workdir: str) -> list[str]:
        """Original DICOM files when the volume came from the DICOM database, else a temporary NIfTI."""
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        if uids and slicer.dicomDatabase is not None:
            files = [slicer.dicomDatabase.fileForInstance(uid) for uid in uids]
            if files and all(f and os.path.isfile(f) for f in files):
                return files
        path = os.path.join(workdir, f"{volumeNode.GetID()}.nii.gz")
        if not slicer.util.saveNode(volumeNode, path):
            raise RuntimeError(f"could not save volume {volumeNode.GetName()} to {path}")
        return [path]

    def ask(self, volumeNodes, prompt: str, url: str = client.DEFAULT_URL, max_new_tokens: int = 256, want_sr: bool = False):
        workdir = tempfile.mkdtemp(prefix="radfm-slicer-")
        try:
            files = [f for node in volumeNodes for f in self.filesForVolume(node, workdir)]
            answer = client.ask(files, prompt, url=url, max_new_tokens=max_new_tokens, want_sr=want_sr)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return answer, self.storeAnswer(answer, volumeNodes)

    def storeAnswer(self, answer, volumeNodes):
        """A text node with prompt, answer and model; a storage node makes it part of the saved scene."""
        textNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTextNode", slicer.mrmlScene.GenerateUniqueName("RadFM answer"))
        textNode.SetText(client.answer_text_for_node(answer))
        textNode.SetForceCreateStorageNode(True)  # saved as a .txt file next to the scene
        textNode.SetAttribute(ANSWER_NODE_ATTRIBUTE, "1")
        textNode.SetAttribute("RadFM.Model", answer.summary())
        textNode.SetAttribute("RadFM.Volumes", ",".join(n.GetID() for n in volumeNodes))
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        if shNode and volumeNodes:  # file the answer next to the first volume in the Data module
            parent = shNode.GetItemParent(shNode.GetItemByDataNode(volumeNodes[0]))
            shNode.SetItemParent(shNode.GetItemByDataNode(textNode), parent)
        return textNode

    def storeSr(self, answer, path: str, importToDatabase: bool = True) -> str:
        written = str(client.save_sr(answer, path))
        if importToDatabase and slicer.dicomDatabase is not None:
            from DICOMLib import DICOMUtils

            DICOMUtils.importDicom(os.path.dirname(written))
        return written


class RadFMTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: the text node round trip (no service needed)."""

    def runTest(self):
        slicer.mrmlScene.Clear(0)
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        imageData = vtk.vtkImageData()
        imageData.SetDimensions(8, 8, 4)
        imageData.AllocateScalars(vtk.VTK_FLOAT, 1)
        volume.SetAndObserveImageData(imageData)
        answer = client.Answer(text="No abnormality.", prompt="<image> Findings?", model={"name": "RadFM", "weights_sha256": "ab" * 32})
        node = RadFMLogic().storeAnswer(answer, [volume])
        self.assertIn("No abnormality.", node.GetText())
        self.assertEqual(node.GetAttribute(ANSWER_NODE_ATTRIBUTE), "1")
        self.delayDisplay("RadFM test passed")
