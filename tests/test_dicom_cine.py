"""A DICOM cine series (several cardiac phases per slice position) read as frames by the cine entry points.

The series are written here with pydicom as a scanner exports them: one MR file per (position, phase), on
an oblique plane, positions written against the slice normal, InstanceNumbers and file names shuffled.
Every image's pixels encode its (phase, position): the tests decode what landed in each frame and slice
and check it against where the geometry says that slice lies, so they do not rely on the reader's order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from models.io.archive import write_zip
from models.io.errors import (
    ImageTooLargeError,
    InconsistentSeriesError,
    MultipleSeriesError,
    NotACineError,
    TooManyFramesError,
    UnsupportedFormatError,
)
from models.io.readers import read_header, read_image
from models.io.readers.read import check_cine_header, read_cine_header, read_frames

ROWS, COLUMNS = 6, 8
PIXEL = (0.8, 0.9)  # x (between columns), y (between rows)
STEP = 4.0  # mm between slice positions
ORIGIN = np.array([-20.0, 35.5, 12.25])
ANGLE = 0.4
ROW = np.array([np.cos(ANGLE), np.sin(ANGLE), 0.0])  # oblique: the rows' direction in LPS
COLUMN = np.array([-np.sin(ANGLE) * np.cos(0.3), np.cos(ANGLE) * np.cos(0.3), np.sin(0.3)])
NORMAL = np.cross(ROW, COLUMN)
PHASE_TAGS = ("TriggerTime", "TemporalPositionIdentifier", None)  # None: InstanceNumber order only


def position_of(j: int) -> np.ndarray:
    """Where position ``j`` lies: against the normal, so that the reader stacks them from the last one."""
    return ORIGIN - j * STEP * NORMAL


def pixels(phase: int, position: int) -> np.ndarray:
    """A non-constant slice whose every value // 100 is ``10 * (phase + 1) + position + 1``."""
    pattern = (np.arange(ROWS * COLUMNS).reshape(ROWS, COLUMNS) * 7) % 37
    return (pattern + 100 * (10 * (phase + 1) + position + 1)).astype(np.int16)


def decode(slice_: np.ndarray) -> tuple[int, int]:
    """The (phase, position) written into a slice, checked to be the whole slice's."""
    code = int(slice_.flat[0]) // 100
    phase, position = code // 10 - 1, code % 10 - 1
    np.testing.assert_array_equal(slice_, pixels(phase, position))
    return phase, position


def _dataset(uid: str, series: str, j: int, p: int, instance: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, uid, "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesDescription = "1.2.826.0.1.3680043.9.7.1", series, "cine"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position_of(j)]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*ROW, *COLUMN)]
    ds.PixelSpacing = [PIXEL[1], PIXEL[0]]  # DICOM: between rows, then between columns
    ds.SliceThickness = 6.0
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLUMNS, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels(p, j).tobytes()
    return ds


def write_cine(folder: Path, positions: int = 3, phases: int = 5, *, phase_tag: str | None = "TriggerTime",
               counts: list[int] | None = None, series: str | None = None, echoes: bool = False,
               seed: int = 0) -> str:
    """A cine series: position ``j`` has ``counts[j]`` (default ``phases``) phases; returns its UID.

    InstanceNumbers are a random permutation, except without a phase tag, where they still grow with the
    phase within a position (the only order left) but not across positions.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series = series or generate_uid()
    counts = counts or [phases] * positions
    images = [(j, p) for j in range(positions) for p in range(counts[j])]
    names = rng.permutation(len(images))
    numbers = rng.permutation(len(images)) + 1
    shift = rng.permutation(positions)
    for k, (j, p) in enumerate(images):
        instance = int(p * positions + shift[j] + 1) if phase_tag is None else int(numbers[k])
        ds = _dataset(generate_uid(), series, j, p, instance)
        if phase_tag == "TriggerTime":
            ds.TriggerTime = f"{38.5 * p + 3.25 * j:.2f}"  # each position's delays are its own
        elif phase_tag == "TemporalPositionIdentifier":
            ds.TemporalPositionIdentifier, ds.NumberOfTemporalPositions = p + 1, max(counts)
        if echoes:
            ds.EchoTime = 2.5 + 2.0 * p
        ds.save_as(folder / f"IM{names[k]:04d}", enforce_file_format=True)
    return series


def check_frames(frames, phases: int, positions: int) -> None:
    """Frame ``t`` holds phase ``t`` at every position, each slice where the geometry says it lies."""
    assert len(frames) == phases and all(f.same_grid(frames[0]) for f in frames)
    for t, frame in enumerate(frames):
        slices = frame.array if frame.ndim == 3 else frame.array[None]
        seen = set()
        for z, slice_ in enumerate(slices):
            phase, position = decode(slice_)
            assert phase == t
            seen.add(position)
            if frame.ndim == 3:
                np.testing.assert_allclose(frame.geometry.index_to_physical(np.array([0, 0, z])),
                                           position_of(position), atol=1e-3)
        assert seen == set(range(positions))


@pytest.mark.parametrize("phase_tag", PHASE_TAGS)
def test_cine_series_reads_as_frames_on_the_grid_of_a_plain_series(tmp_path, phase_tag):
    write_cine(tmp_path / "cine", phase_tag=phase_tag)
    header = read_cine_header(tmp_path / "cine")
    assert (header.n_frames, header.size, header.dims, header.format) == (5, (COLUMNS, ROWS, 3, 5), 4, "dicom")
    assert header.info["phases_ordered_by"] == (phase_tag or "InstanceNumber")
    check_cine_header(header, max_frames=5)
    frames = read_frames(tmp_path / "cine")
    check_frames(frames, 5, 3)
    assert frames[2].metadata["frame"] == 2 and frames[0].metadata["n_frames"] == 5

    write_cine(tmp_path / "plain", phases=1)  # the same three positions, one phase: a normal series
    plain = read_image(tmp_path / "plain")
    assert frames[0].geometry.close_to(plain.geometry, tol=1e-5)
    np.testing.assert_allclose(plain.geometry.spacing, (*PIXEL, STEP), atol=1e-4)
    np.testing.assert_allclose(plain.geometry.matrix, np.column_stack([ROW, COLUMN, NORMAL]), atol=1e-5)
    np.testing.assert_allclose(plain.geometry.origin, position_of(2), atol=1e-3)
    assert header.spacing[:3] == pytest.approx(plain.geometry.spacing)


def test_trigger_times_are_recorded_per_phase(tmp_path):
    write_cine(tmp_path / "cine")
    header = read_cine_header(tmp_path / "cine")
    assert header.info["trigger_times_ms"] == pytest.approx([38.5 * p + 3.25 for p in range(5)])
    assert (header.info["positions"], header.info["phases"], header.info["files"]) == (3, 5, 15)


def test_a_zip_and_a_series_chosen_by_uid_prefix(tmp_path):
    write_cine(tmp_path / "pack" / "cine", series="1.2.826.0.1.3680043.9.7.51")
    write_cine(tmp_path / "pack" / "localiser", phases=1, series="1.2.826.0.1.3680043.9.7.62")
    archive = write_zip(tmp_path / "export.zip", tmp_path / "pack")
    with pytest.raises(MultipleSeriesError):
        read_frames(archive)
    assert read_cine_header(archive, series="1.2.826.0.1.3680043.9.7.5").n_frames == 5
    check_frames(read_frames(archive, series="1.2.826.0.1.3680043.9.7.5"), 5, 3)
    with pytest.raises(NotACineError, match="single 3-D image"):
        read_frames(archive, series="1.2.826.0.1.3680043.9.7.6")


def test_a_single_position_cine_gives_2d_frames(tmp_path):
    write_cine(tmp_path / "cine", positions=1, phases=4)
    header = read_cine_header(tmp_path / "cine")
    assert (header.n_frames, header.size, header.image_ndim) == (4, (COLUMNS, ROWS, 1, 4), 2)
    frames = read_frames(tmp_path / "cine")
    assert all(f.ndim == 2 for f in frames)
    check_frames(frames, 4, 1)
    np.testing.assert_allclose(frames[0].geometry.spacing, PIXEL, atol=1e-5)
    single = read_image(next((tmp_path / "cine").iterdir()))  # one of its files, read alone
    assert single.geometry.close_to(frames[0].geometry, tol=1e-4)


def test_positions_with_different_phase_counts_are_refused(tmp_path):
    write_cine(tmp_path / "cine", counts=[5, 4, 5])
    for read in (read_cine_header, read_frames):
        with pytest.raises(InconsistentSeriesError, match=r"\(5 phases at 2 positions, 4 phases at 1 position\)") \
                as info:
            read(tmp_path / "cine")
        assert sorted(info.value.details["phases_per_position"]) == [4, 5, 5]


def test_too_many_frames_or_voxels_are_refused_from_the_header(tmp_path):
    write_cine(tmp_path / "cine")
    header = read_cine_header(tmp_path / "cine")
    with pytest.raises(TooManyFramesError, match="has 5 frames, more than the limit of 4"):
        check_cine_header(header, max_frames=4)
    with pytest.raises(ImageTooLargeError, match="144 voxels"):
        check_cine_header(header, max_voxels=100)
    with pytest.raises(TooManyFramesError):
        read_frames(tmp_path / "cine", max_frames=4)


def test_a_plain_series_is_not_a_cine_and_a_cine_is_no_single_image(tmp_path):
    write_cine(tmp_path / "plain", phases=1)
    assert read_cine_header(tmp_path / "plain").n_frames == 1
    with pytest.raises(NotACineError, match="single 3-D image"):
        read_frames(tmp_path / "plain")
    write_cine(tmp_path / "cine")
    for read in (read_image, read_header):  # unchanged: a series with phases is no volume
        with pytest.raises(InconsistentSeriesError, match="places 5 slices at the same position"):
            read(tmp_path / "cine")


def test_echoes_without_a_phase_tag_are_not_phases(tmp_path):
    write_cine(tmp_path / "echoes", phases=2, phase_tag=None, echoes=True)
    with pytest.raises(NotACineError, match="EchoTime"):
        read_frames(tmp_path / "echoes")


def test_a_multiframe_file_with_time_points_is_refused(tmp_path):
    ds = _dataset(generate_uid(), generate_uid(), 0, 0, 1)
    ds.NumberOfFrames, ds.FrameTime = 4, 40.0
    ds.FrameIncrementPointer = 0x00181063  # FrameTime: the frames follow one another in time
    ds.PixelData = np.stack([pixels(p, 0) for p in range(4)]).tobytes()
    ds.save_as(tmp_path / "loop.dcm", enforce_file_format=True)
    for read in (read_cine_header, read_frames):
        with pytest.raises(UnsupportedFormatError, match="4 time points in one file"):
            read(tmp_path / "loop.dcm")
