"""``xaiexplain serve``: the explanation panel as a web page, on trame-slicer.

The page drives the same :class:`~XAIExplainLib.logic.XAIExplainLogic` on the MRML scene of a
trame-slicer application (Kitware's ``trame-slicer``: Slicer's scene, slice views and
displayable managers served to a browser), so runs, node names, colours and display are
Slicer's. Modules: :mod:`.security` (token, allowed paths, upload limit), :mod:`.scene_app`
(scene and views), :mod:`.bridge` (page state <-> logic), :mod:`.review` (an output folder
of ``xaiexplain explain``), :mod:`.page` (the layout), :mod:`.server` (arguments and start).
Nothing in the library imports this package; it needs the ``web`` extra.
"""
