"""models/io/dicom_seg.py: the warped mask as a DICOM SEG whose every frame references the slice it lies on.

The fixed series is written here with pydicom as a scanner would (CT, one file per slice, UIDs, a frame
of reference), on a sagittal grid whose first instance is the slice farthest along the normal: the
reader stacks the slices the other way round, so a SEG built in file or instance order would put its
frames on the wrong slices. Each slice's pixels hold its instance number, so which read slice a source
instance became is checked from the voxels, not from the code under test. The SEG is read back with
pydicom (frame by frame) and with highdicom.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SegmentationStorage, generate_uid

from models.io.dicom_seg import SOFTWARE, dicom_seg, write_dicom_seg
from models.io.errors import DicomSegError
from models.io.image import LABEL, Image
from models.io.readers import read_image
from models.io.readers.dicom_sources import dicom_source_datasets

SHAPE = (4, 10, 12)  # slices, rows, columns
SPACING_XYZ = (0.8, 0.9, 3.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run along +y (posterior), columns along -z (down)
NAMES = {"1": "right ventricle", "3": "left ventricle"}  # 7 is left unnamed


def write_ct_series(folder: Path, shape=SHAPE, spacing_xyz=SPACING_XYZ, iop=SAGITTAL, origin=(10.0, -20.0, 30.0),
                    frame_of_reference: bool = True) -> list[str]:
    """A CT series of ``shape`` into ``folder``; instance ``k + 1`` is the ``k``-th slice *down* the normal,
    and every one of its pixels is ``100 * (k + 1)``. Returns the SOPInstanceUIDs in instance order."""
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    study, series, frame_uid = generate_uid(), generate_uid(), generate_uid()
    n, rows, columns = shape
    uids = []
    for k in range(n):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, uid, "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = study, series, 3, k + 1
        if frame_of_reference:
            ds.FrameOfReferenceUID = frame_uid
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = "Phantom^Test", "P-1", "20240101", "120000"
        position = np.asarray(origin) + (n - 1 - k) * spacing_xyz[2] * normal  # descending along the normal
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.4f}" for v in iop]
        ds.PixelSpacing = [spacing_xyz[1], spacing_xyz[0]]  # DICOM: between rows, then between columns
        ds.SliceThickness = spacing_xyz[2]
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.full((rows, columns), 100 * (k + 1), "<i2").tobytes()
        ds.save_as(folder / f"img{(7 * k) % n:03d}.dcm", enforce_file_format=True)  # names out of order
        uids.append(uid)
    return uids


def labels_on(fixed: Image) -> np.ndarray:
    """A mask on the fixed grid that differs on every slice: 1 only on slice 0, 3 on 1-2, 7 and 1 on 3."""
    mask = np.zeros(fixed.array.shape, np.uint8)
    mask[0, 1:4, 2:6] = 1
    mask[1, 5:9, 6:11] = 3
    mask[2, 5:7, 6:8] = 3
    mask[3, 0:2, :] = 7
    mask[3, 8:, 10:] = 1
    return mask


@pytest.fixture
def series(tmp_path) -> tuple[Path, list[str]]:
    folder = tmp_path / "ct"
    return folder, write_ct_series(folder)


def slice_of_instance(fixed: Image, uids: list[str]) -> dict[str, int]:
    """Which slice of the read array each instance became, from its pixel value (100 × instance number)."""
    return {uid: int(np.flatnonzero(fixed.array[:, 0, 0] == 100 * (k + 1))[0]) for k, uid in enumerate(uids)}


def check_seg_frames(path: Path, mask: np.ndarray, where: dict[str, int], values: list[int]) -> None:
    """Every frame shows exactly its source slice's voxels of its segment's label; every labelled slice is there."""
    seg = pydicom.dcmread(path)
    pixels = seg.pixel_array.reshape(-1, *mask.shape[1:])
    seen = set()
    for frame, item in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        z = where[source]
        np.testing.assert_array_equal(frame, mask[z] == values[number - 1])
        seen.add((z, values[number - 1]))
    assert seen == {(z, v) for z in range(mask.shape[0]) for v in values if np.any(mask[z] == v)}


def test_frames_reference_the_source_slice_they_lie_on(series, tmp_path):
    folder, uids = series
    fixed = read_image(folder)
    where = slice_of_instance(fixed, uids)
    assert [where[u] for u in uids] == [3, 2, 1, 0]  # the reader stacks against instance order
    mask = labels_on(fixed)
    sources = dicom_source_datasets(folder)
    assert [ds.SOPInstanceUID for ds in sources] == uids[::-1] and "PixelData" not in sources[0]

    path = write_dicom_seg(Image(mask, fixed.geometry, LABEL), sources, tmp_path / "seg.dcm", label_names=NAMES,
                           model="cardiac:3")
    check_seg_frames(path, mask, where, [1, 3, 7])
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SegmentationStorage and ds.SegmentationType == "BINARY" and ds.Modality == "SEG"
    assert (ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.PatientID) == (sources[0].StudyInstanceUID,
                                                                          sources[0].FrameOfReferenceUID, "P-1")
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} \
        == set(uids)
    # Each frame sits where its source slice sits.
    positions = {s.SOPInstanceUID: [float(v) for v in s.ImagePositionPatient] for s in sources}
    for item in ds.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   positions[source], atol=1e-3)
    # highdicom reads the same: by source instance, segment numbers 1, 2, 3 stand for labels 1, 3, 7.
    by_instance = hd.seg.segread(path).get_pixels_by_source_instance(uids, combine_segments=True)
    expected = np.stack([np.searchsorted([0, 1, 3, 7], mask[where[uid]]) for uid in uids])
    np.testing.assert_array_equal(by_instance, expected)


def test_sources_in_any_order_give_frames_on_the_right_slices(series, tmp_path):
    folder, uids = series
    fixed = read_image(folder)
    mask = labels_on(fixed)
    in_instance_order = sorted(dicom_source_datasets(folder), key=lambda ds: int(ds.InstanceNumber))
    path = write_dicom_seg(Image(mask, fixed.geometry, LABEL), in_instance_order, tmp_path / "seg.dcm")
    check_seg_frames(path, mask, slice_of_instance(fixed, uids), [1, 3, 7])


def test_segments_are_named_from_the_labels_and_the_model(series, tmp_path):
    folder, _ = series
    fixed = read_image(folder)
    path = write_dicom_seg(Image(labels_on(fixed), fixed.geometry, LABEL), dicom_source_datasets(folder),
                           tmp_path / "seg.dcm", label_names=NAMES, model="cardiac:3")
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 3
    described = [seg.get_segment_description(n) for n in (1, 2, 3)]
    assert [d.segment_label for d in described] == ["right ventricle", "left ventricle", "label 7"]
    assert [d.SegmentDescription for d in described] == [f"label value {v} of the warped mask" for v in (1, 3, 7)]
    algorithm = described[0].algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (SOFTWARE, "cardiac:3")
    assert seg.ManufacturerModelName == SOFTWARE and seg.SeriesDescription == f"warped mask ({SOFTWARE})"


def test_a_series_without_a_frame_of_reference_is_refused_by_name(tmp_path):
    folder = tmp_path / "ct"
    write_ct_series(folder, frame_of_reference=False)
    fixed = read_image(folder)
    with pytest.raises(DicomSegError, match="without a FrameOfReferenceUID") as caught:
        dicom_seg(Image(labels_on(fixed), fixed.geometry, LABEL), dicom_source_datasets(folder))
    assert caught.value.code == "dicom_seg" and caught.value.http_status == 422


def test_a_mask_off_the_series_slices_or_empty_is_refused(series):
    folder, _ = series
    fixed = read_image(folder)
    sources = dicom_source_datasets(folder)
    half_slice = fixed.geometry.index_to_physical(np.array([0.0, 0.0, 0.5]))
    shifted = type(fixed.geometry)(fixed.geometry.spacing, tuple(half_slice), fixed.geometry.direction)
    with pytest.raises(DicomSegError, match="do not lie one each on the mask's 4 slices"):
        dicom_seg(Image(labels_on(fixed), shifted, LABEL), sources)
    with pytest.raises(DicomSegError, match="holds no label"):
        dicom_seg(Image(np.zeros(SHAPE, np.uint8), fixed.geometry, LABEL), sources)


def test_a_non_dicom_input_has_no_source_datasets(tmp_path):
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)), str(path))
    assert dicom_source_datasets(path) is None


# -- the pipeline: register_files writes the SEG beside the NIfTI mask when the fixed image is DICOM -------

def zero_field_model():
    """A 2-D estimator whose field is exactly zero: the warped mask is the moving mask."""
    import torch

    from models.artifact import LoadedModel
    from models.intensity import IntensityConfig
    from models.networks.estimator import EstimatorConfig
    from models.networks.registry import build_estimator

    config = EstimatorConfig(ndim=2, enc=(4, 4), dec=(4, 4, 4), int_steps=0)
    estimator = build_estimator(config)
    with torch.no_grad():
        estimator.flow.weight.zero_()
        estimator.flow.bias.zero_()
    return LoadedModel(estimator.eval(), config, IntensityConfig(), None, {}, None)


def write_pair_on(fixed: Image, mask: np.ndarray, folder: Path) -> dict[str, Path]:
    """A moving image and mask as NIfTI on the fixed image's grid."""
    moving = np.random.default_rng(1).random(fixed.array.shape).astype(np.float32)
    paths = {"moving": folder / "moving.nii.gz", "moving_mask": folder / "moving_mask.nii.gz"}
    sitk.WriteImage(Image(moving, fixed.geometry).to_sitk(), str(paths["moving"]))
    sitk.WriteImage(Image(mask, fixed.geometry, LABEL).to_sitk(), str(paths["moving_mask"]))
    return paths


def test_register_files_writes_the_seg_for_a_dicom_fixed_series_zip(series, tmp_path):
    from models.outputs import WARPED_MASK_SEG
    from models.register import register_files

    folder, uids = series
    fixed = read_image(folder)
    mask = labels_on(fixed)
    archive = tmp_path / "fixed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, f"export/{file.name}")
    inputs = {"fixed": archive} | write_pair_on(fixed, mask, tmp_path)
    done = register_files(zero_field_model, inputs, tmp_path / "out", model_fields={"model": "zero:1"},
                          label_names=NAMES)
    assert done.paths["warped_mask_seg"] == tmp_path / "out" / WARPED_MASK_SEG
    assert done.report["dicom_seg"] == {"written": True}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["dicom_seg"] == {"written": True}
    check_seg_frames(done.paths["warped_mask_seg"], mask, slice_of_instance(fixed, uids), [1, 3, 7])
    algorithm = hd.seg.segread(done.paths["warped_mask_seg"]).get_segment_description(1).algorithm_identification[0]
    assert algorithm.AlgorithmVersion == "zero:1"


def test_register_files_says_why_a_series_could_carry_no_seg_and_skips_nifti(tmp_path, dicom_zip):
    from models.register import register_files

    volume = (np.random.default_rng(2).random((3, 16, 16)) * 1000).astype(np.int16)
    archive = dicom_zip(volume, (1.0, 1.0, 4.0), tmp_path / "sitk.zip")  # SimpleITK gives each slice its own study
    fixed = read_image(archive)
    mask = np.zeros(volume.shape, np.uint8)
    mask[1, 4:9, 4:9] = 2
    inputs = {"fixed": archive} | write_pair_on(fixed, mask, tmp_path)
    done = register_files(zero_field_model, inputs, tmp_path / "out", model_fields={"model": "zero:1"})
    assert "warped_mask_seg" not in done.paths and not (tmp_path / "out" / "warped_mask_seg.dcm").exists()
    assert done.report["dicom_seg"]["written"] is False
    assert "3 different studies" in done.report["dicom_seg"]["reason"]
    assert (tmp_path / "out" / "warped_mask.nii.gz").exists()  # the other outputs stand

    nifti = tmp_path / "fixed.nii.gz"
    sitk.WriteImage(fixed.to_sitk(), str(nifti))
    done = register_files(zero_field_model, dict(inputs, fixed=nifti), tmp_path / "out2", model_fields={})
    assert "warped_mask_seg" not in done.paths and "dicom_seg" not in done.report
