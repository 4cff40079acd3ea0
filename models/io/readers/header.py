"""What a file says about its image before its pixels are read, and what can be refused from that alone.

Uploads can be large and pixel reading is the slow part, so every refusal the header allows — no voxels,
vector or complex voxels, a missing or impossible ``frame``, too many voxels, a 1-D profile — is made
here first. :func:`check_header` is public so that a service can refuse an upload from
:func:`~models.io.readers.read_header` without reading it.

Frames: an image with more than three axes has ``prod(size[3:])`` frames (a 5-D ``X×Y×Z×T×E`` has
``T·E``, numbered with T fastest); one must be chosen with ``frame=`` unless there is only one.
``max_voxels`` counts the voxels of one frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models.io.errors import (
    EmptyImageError,
    FrameOutOfRangeError,
    FrameRequiredError,
    ImageTooLargeError,
    UnsupportedDimensionsError,
    VectorImageError,
)
from models.io.readers.geometry import fmt_size

__all__ = ["DEFAULT_MAX_VOXELS", "ImageHeader", "check_header"]

DEFAULT_MAX_VOXELS = 256**3 * 4


@dataclass(frozen=True)
class ImageHeader:
    """What a file says about its image, without its pixels (sizes etc. in ITK index order, LPS)."""

    path: str
    format: str
    dims: int
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major dims × dims
    pixel_type: str  # NumPy dtype name of one component, e.g. "int16"
    n_components: int = 1
    n_frames: int = 1
    series_uid: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_voxels(self) -> int:
        """Voxels in one (3-D or 2-D) frame."""
        return math.prod(self.size[:3])

    @property
    def image_ndim(self) -> int | None:
        """Dimensionality of the image :func:`read_image` returns (singleton axes dropped), if 2 or 3."""
        spatial = self.size[:3]
        n = sum(1 for s in spatial if s != 1)
        return n if n in (2, 3) else None


def _check_voxel_type(header: ImageHeader) -> None:
    """Refuse an image without voxels, or whose voxels are not one real grey value each."""
    display, size = header.path, header.size
    if any(s == 0 for s in size):
        raise EmptyImageError(f"has a zero-size axis (size {fmt_size(size)}): it holds no voxels", path=display,
                              hint="export the image again; the file is empty")
    if header.pixel_type.startswith("complex"):
        raise VectorImageError(f"has complex-valued voxels ({header.pixel_type})", path=display,
                               hint="upload the magnitude image")
    if header.n_components > 1:
        raise VectorImageError(f"has {header.n_components} components per voxel ({header.pixel_type}), where one "
                               "grey value per voxel is expected", path=display, components=header.n_components)


def _check_frame(header: ImageHeader, frame: int | None, frame_name: str | None) -> None:
    """Refuse a 4-D+ image without ``frame``, and a ``frame`` the image does not have; the messages call the
    parameter ``frame_name``, the name the caller's user sent it by (``moving_frame``); None where the input
    has no such parameter (a mask), so the message does not invent one."""
    display, size, n_frames = header.path, header.size, header.n_frames
    if header.dims > 3 and n_frames > 1 and frame is None:
        raise FrameRequiredError(f"is a {header.dims}-D image of size {fmt_size(size)}, i.e. {n_frames} frames "
                                 f"of {fmt_size(size[:3])}", path=display, n_frames=n_frames,
                                 hint=f"choose one 3-D frame with {frame_name} (0 to {n_frames - 1})" if frame_name
                                 else "upload one 3-D frame: this input takes no frame choice")
    if frame is not None and not 0 <= frame < n_frames:
        hint = f"choose a frame from 0 to {n_frames - 1}" if n_frames > 1 else f"leave {frame_name} unset"
        raise FrameOutOfRangeError(f"{frame_name}={frame} is out of range: the image has {n_frames} frame"
                                   f"{'s' * (n_frames != 1)}", path=display, n_frames=n_frames, hint=hint)


def check_header(header: ImageHeader, *, frame: int | None = None, frame_name: str | None = "frame",
                 max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[int, ...]:
    """Refuse what :func:`read_image` would refuse from the header alone; returns the frame's index.

    Raises :class:`EmptyImageError`, :class:`VectorImageError`, :class:`UnsupportedDimensionsError`,
    :class:`FrameRequiredError` / :class:`FrameOutOfRangeError`, :class:`ImageTooLargeError`.
    """
    display, size = header.path, header.size
    _check_voxel_type(header)
    _check_frame(header, frame, frame_name)
    voxels = header.n_voxels
    if voxels > max_voxels:
        raise ImageTooLargeError(f"has {voxels:,} voxels ({fmt_size(size[:3])}), more than the limit of "
                                 f"{max_voxels:,} voxels (max_voxels)", path=display, limit=max_voxels,
                                 voxels=voxels)
    if header.image_ndim is None:
        raise UnsupportedDimensionsError(f"is not a 2-D or 3-D image (size {fmt_size(size[:3])})", path=display)
    extra = size[3:]
    if not extra:
        return ()
    return tuple(int(i) for i in np.unravel_index(frame or 0, extra, order="F"))
