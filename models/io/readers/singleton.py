"""The singleton-axis rule: a 3-D grid with exactly one axis of size 1 is read as a 2-D image.

Why: a 2-D slice is stored as X×Y×1 (NIfTI, MetaImage), a single DICOM slice is a 1-slice volume, and a
coronal slice may be X×1×Z; registering it as a 3-D volume one voxel thick would be wrong, so it becomes a
2-D image over the two other index axes.

Its geometry: drop the physical axis the singleton index axis points along most. If the two in-plane axes
have no component along it (below 1e-5: the slice lies in a plane of the LPS axes, flips allowed), the
remaining 2×2 block of the direction is the 2-D direction and the origin keeps those two coordinates
(``"submatrix"``). Otherwise (an oblique slice, whose in-plane axes mix in the dropped axis) the 2-D frame
is the slice's own: direction identity, origin = the 3-D origin projected on the two in-plane axes
(``"in-plane"``), which keeps in-plane distances exact and is the same for all slices of one plane.
``metadata["squeezed"]`` records the axis, the mode and the 3-D geometry. Two or more singleton axes (a
1-D profile) are refused earlier, from the header (:class:`UnsupportedDimensionsError`).
"""

from __future__ import annotations

import numpy as np

from models.io.image import Geometry
from models.io.readers.geometry import floats

__all__ = ["squeeze"]


def squeeze(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry, dict | None]:
    """Drop the one singleton index axis of a 3-D grid (see the module docstring for the geometry rule)."""
    size = tuple(reversed(array.shape))
    ones = [k for k in range(len(size)) if size[k] == 1]
    if geometry.ndim != 3 or len(ones) != 1:
        return array, geometry, None
    axis = ones[0]
    keep = [k for k in range(3) if k != axis]
    matrix = geometry.matrix
    dropped = int(np.argmax(np.abs(matrix[:, axis])))
    rows = [i for i in range(3) if i != dropped]
    block = matrix[np.ix_(rows, keep)]
    origin = np.asarray(geometry.origin)
    if np.abs(matrix[dropped, keep]).max() < 1e-5:  # the slice plane has nothing along the dropped axis
        direction, origin2, mode = block, origin[rows], "submatrix"
    else:
        direction, origin2, mode = np.eye(2), matrix[:, keep].T @ origin, "in-plane"
    spacing = tuple(float(geometry.spacing[k]) for k in keep)
    squeezed = Geometry(spacing, floats(origin2), floats(direction))
    info = {"axis": axis, "mode": mode, "spacing": geometry.spacing, "origin": geometry.origin,
            "direction": geometry.direction}
    return np.squeeze(array, axis=2 - axis), squeezed, info
