"""XAIExplainLib.imaging: SimpleITK grids and resampling, intensity windows, CT phantoms.

- :mod:`.reading`  the one image reader: header-vs-file checks, complete DICOM series
- :mod:`.resample`  grids (size, spacing, origin, direction) and resampling onto them
- :mod:`.channels`  one image per input channel stacked on the first one's grid
- :mod:`.intensity` Hounsfield windows and z-scores that turn scanner values into inputs
- :mod:`.phantoms`  procedural abdominal and chest CT volumes with ground-truth masks

A leaf of the package: the engine never imports it.
"""
