"""In-Slicer self test of XAI Explain: the module's logic end to end inside a running Slicer.

It is a scripted module of its own (category Testing.TestCases), as Slicer's self tests are, so it
appears in the Self Tests module and runs as a ctest (``py_XAIExplainSelfTest``, see CMakeLists.txt
beside it); the XAI Explain module's "Reload and Test" runs it too. Outside Slicer the same logic is
tested in plain Python against a slicer-core scene (Testing/ at the repository root). numpy and torch
are imported inside the tests: Slicer loads this file at start-up, before PyTorch may be installed.
"""
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from XAIExplain import XAIExplainLogic
from XAIExplainLib.logic.dependencies import missing_dependencies


class XAIExplainSelfTest(ScriptedLoadableModule):
    """Registers the self test (Self Tests module, Testing.TestCases); it has no panel of its own."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "XAIExplainSelfTest"
        self.parent.categories = ["Testing.TestCases"]
        self.parent.dependencies = ["XAIExplain"]
        self.parent.contributors = ["XAIExplain developers"]
        self.parent.helpText = "Self test of the XAI Explain module: heatmaps, cancel and background runs in a scene."
        self.parent.acknowledgementText = ""


class XAIExplainSelfTestTest(ScriptedLoadableModuleTest):
    """The logic end to end on a generated volume (needs torch; skipped with the reason when it is missing)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_HeatmapLandsOnTheBrightObject()
        self.setUp()
        self.test_CancelLeavesTheSceneUnchanged()
        self.setUp()
        self.test_BackgroundRunKeepsTheSceneUntilFinish()
        self.setUp()
        self.test_BackgroundCancel()

    @staticmethod
    def brightObjectVolume():
        import numpy as np

        voxels = np.full((12, 24, 28), -1000, dtype=np.int16)
        voxels[4:8, 8:14, 16:22] = 300
        ijkToRas = np.array([[0.0, -0.9, 0.0, 10.0], [0.8, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 3.0], [0, 0, 0, 1]])
        return voxels, slicer.util.addVolumeFromArray(voxels, ijkToRas, name="XAIExplainSelfTest CT")

    @staticmethod
    def brightObjectModel():
        """Class 1 score = mean of ReLU(x): its Grad-CAM is exactly the bright object."""
        import torch

        model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                    torch.nn.Flatten(), torch.nn.Linear(1, 2))
        with torch.no_grad():
            model[0].weight.fill_(1.0)
            model[0].bias.zero_()
            model[4].weight.copy_(torch.tensor([[-1.0], [1.0]]))
            model[4].bias.zero_()
        return model.eval()

    def test_HeatmapLandsOnTheBrightObject(self):
        import numpy as np

        if missing_dependencies():
            self.skipTest("PyTorch is not installed")
        voxels, volume = self.brightObjectVolume()
        logic = XAIExplainLogic()
        nodes = logic.explainVolume(volume, self.brightObjectModel(), methods=["gradcam"], layer="1",
                                    target="bright", classNames=["dark", "bright"], mode="axial")
        heatmap = nodes.heatmaps["gradcam"]
        matrixIn, matrixOut = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrixIn)
        heatmap.GetIJKToRASMatrix(matrixOut)
        self.assertEqual(slicer.util.arrayFromVTKMatrix(matrixIn).tolist(),
                         slicer.util.arrayFromVTKMatrix(matrixOut).tolist())
        values = slicer.util.arrayFromVolume(heatmap)
        self.assertTrue(voxels[np.unravel_index(np.argmax(values), values.shape)] == 300)
        self.assertLess(float(values[voxels < 0].max()), 0.05)
        self.assertEqual(volume.GetName(), "XAIExplainSelfTest CT")
        self.delayDisplay("Heatmap lies on the bright object")

    def test_CancelLeavesTheSceneUnchanged(self):
        if missing_dependencies():
            self.skipTest("PyTorch is not installed")
        voxels, volume = self.brightObjectVolume()
        logic = XAIExplainLogic()
        countBefore = slicer.mrmlScene.GetNumberOfNodes()

        def progress(fraction, message):
            if fraction > 0.5:
                logic.cancel()

        from XAIExplainLib.logic import ExplainCancelled

        with self.assertRaises(ExplainCancelled):
            logic.explainVolume(volume, self.brightObjectModel(), methods=["gradcam"], layer="1",
                                classNames=["dark", "bright"], progress=progress)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), countBefore)
        self.delayDisplay("Cancel left the scene unchanged")

    @staticmethod
    def waitFor(job, seconds=60.0):
        """Poll like the panel's timer does, letting Qt process events meanwhile."""
        import time

        deadline = time.monotonic() + seconds
        while not job.done and time.monotonic() < deadline:
            slicer.app.processEvents()
            job.wait(0.05)
        return job.done

    def test_BackgroundRunKeepsTheSceneUntilFinish(self):
        import numpy as np

        if missing_dependencies():
            self.skipTest("PyTorch is not installed")
        voxels, volume = self.brightObjectVolume()
        logic = XAIExplainLogic()
        countBefore = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.startExplainVolume(volume, self.brightObjectModel(), methods=["gradcam", "scorecam"], layer="1",
                                       target="bright", classNames=["dark", "bright"], mode="axial")
        with self.assertRaises(RuntimeError):  # one run at a time
            logic.startExplainVolume(volume, self.brightObjectModel(), methods=["gradcam"], layer="1",
                                     classNames=["dark", "bright"])
        self.assertTrue(self.waitFor(job))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), countBefore)  # nothing published before finish
        nodes = job.finish()
        values = slicer.util.arrayFromVolume(nodes.heatmaps["scorecam"])
        self.assertTrue(voxels[np.unravel_index(np.argmax(values), values.shape)] == 300)
        self.assertFalse(logic.isRunning)
        self.delayDisplay("Background run published on finish")

    def test_BackgroundCancel(self):
        if missing_dependencies():
            self.skipTest("PyTorch is not installed")
        from XAIExplainLib.logic import ExplainCancelled

        voxels, volume = self.brightObjectVolume()
        logic = XAIExplainLogic()
        countBefore = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.startExplainVolume(volume, self.brightObjectModel(), methods=["scorecam", "occlusion"],
                                       layer="1", classNames=["dark", "bright"], mode="axial")
        job.cancel()
        self.assertTrue(self.waitFor(job, 10.0))
        with self.assertRaises(ExplainCancelled):
            job.finish()
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), countBefore)
        self.assertFalse(logic.isRunning)
        self.delayDisplay("Cancel stopped the background run")
