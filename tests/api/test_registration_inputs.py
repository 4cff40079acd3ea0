"""Uploads whose headers are fine but whose voxels are not: refused in the request, before a job exists.

Until the API read every voxel, these were accepted with 202 and failed later in the worker (a float64
image beyond float32's range even failed there as "infinite voxels"). Each must now be a 4xx naming the
form field and the problem, and leave no job row, no job folder and no broker message.
"""

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

MiB = 1024 * 1024
MODEL = "tinyreg"
SIZE = (32, 32)


def nifti(folder, name, array, spacing=(1.0, 1.0)):
    """``array`` as .nii.gz bytes (SimpleITK writes float64 as float64, so values are kept as given)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    return (folder / f"{name}.nii.gz").read_bytes()


def cut_in_the_voxels(data: bytes) -> bytes:
    """A .nii.gz cut at 60% of its bytes: random voxels barely compress, so the cut falls among them."""
    assert len(gzip.decompress(data)) > 10_000  # 16 KiB of voxels behind a 352-byte header
    return data[: len(data) * 3 // 5]


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """A good 2-D pair and mask, and one bad file per case, as .nii.gz bytes."""
    folder, rng = tmp_path_factory.mktemp("inputs"), np.random.default_rng(3)
    good = rng.random(SIZE).astype(np.float32)
    mask = np.zeros(SIZE, np.uint8)
    mask[8:20, 10:22] = 1
    with_nan, with_inf, huge = good.copy(), good.copy(), good.astype(np.float64)
    with_nan[4, 5] = np.nan
    with_inf[6, 7] = -np.inf
    huge[2, 3] = 1e39  # finite in float64, Inf once cast to float32
    fractional = mask.astype(np.float32) * 0.5
    return {
        "fixed": nifti(folder, "fixed", good), "moving": nifti(folder, "moving", rng.random(SIZE).astype(np.float32)),
        "mask": nifti(folder, "mask", mask),
        "truncated": cut_in_the_voxels(nifti(folder, "big", rng.normal(size=(64, 64)).astype(np.float32))),
        "nan": nifti(folder, "nan", with_nan), "inf": nifti(folder, "inf", with_inf),
        "constant": nifti(folder, "constant", np.full(SIZE, 7.0, np.float32)),
        "huge": nifti(folder, "huge", huge),
        "off_grid_mask": nifti(folder, "off_grid", mask, spacing=(1.5, 1.0)),
        "fractional_mask": nifti(folder, "fractional", fractional),
    }


@pytest.fixture(scope="module")
def server(serve_tiny_default):
    """A server whose default model is the tiny one, so only the inputs can be wrong."""
    return serve_tiny_default(MODEL, max_upload_bytes=MiB)


def state(live):
    """Rows (through the API), job folders and broker messages: what a refusal must leave unchanged."""
    jobs = live.settings.artifact_dir / "jobs"
    folders = sorted(p.name for p in jobs.iterdir()) if jobs.exists() else []
    sent = sorted((live.settings.broker_dir / "queue").glob("*.msg"))
    return live.client.get("/v1/registrations").json()["count"], folders, sent


def post(live, uploads, **roles):
    """Upload the good pair with ``roles`` (form field -> key of ``uploads``) replacing or adding files."""
    chosen = {"fixed": "fixed", "moving": "moving"} | roles
    files = {role: (f"{role}.nii.gz", uploads[key]) for role, key in chosen.items()}
    return live.client.post("/v1/registrations", files=files)


def test_the_truncated_file_still_has_a_readable_header(tmp_path, uploads):
    """The case is real: the header reads (so the old header-only check let it through), the voxels do not."""
    from models.io.errors import UnreadableImageError
    from models.io.readers import read_header, read_image

    (tmp_path / "cut.nii.gz").write_bytes(uploads["truncated"])
    assert read_header(tmp_path / "cut.nii.gz").size[:2] == (64, 64)
    with pytest.raises(UnreadableImageError):
        read_image(tmp_path / "cut.nii.gz")


@pytest.mark.parametrize(("roles", "status", "code", "start"), [
    ({"moving": "truncated"}, 400, "unreadable_image", "moving: the pixel data cannot be read"),
    ({"fixed": "nan"}, 422, "non_finite_values", "fixed: has 1 NaN and 0 infinite voxels"),
    ({"moving": "inf"}, 422, "non_finite_values", "moving: has 0 NaN and 1 infinite voxels"),
    ({"moving": "constant"}, 422, "empty_image", "moving: every voxel has the value 7"),
    ({"fixed": "huge"}, 422, "values_out_of_range", "fixed: has 1 voxels beyond ±3.403e+38, the range of 32-bit"),
    ({"moving_mask": "off_grid_mask"}, 422, "mask_geometry",
     "moving_mask: the mask grid (size 32×32, spacing (1.5, 1) mm, origin (0, 0)) differs from the grid of its "
     "image moving (size 32×32, spacing (1, 1) mm"),
    ({"fixed_mask": "fractional_mask"}, 422, "non_integer_mask", "fixed_mask: the mask holds 144 non-integer values"),
], ids=["truncated_gz", "nan", "inf", "constant", "beyond_float32", "mask_off_grid", "fractional_mask"])
def test_bad_voxels_are_refused_before_a_job_exists(server, uploads, roles, status, code, start):
    before = state(server)
    response = post(server, uploads, **roles)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["detail"].startswith(start), body["detail"]
    assert str(server.settings.artifact_dir) not in body["detail"] and "inputs/" not in body["detail"]
    assert state(server) == before


def test_the_good_pair_with_both_masks_is_still_accepted(server, uploads):
    before = state(server)
    response = post(server, uploads, moving_mask="mask", fixed_mask="mask")
    assert response.status_code == 202, response.text
    count, folders, sent = state(server)
    assert count == before[0] + 1 and response.json()["id"] in folders and len(sent) == len(before[2]) + 1


@pytest.mark.parametrize(("files", "form", "unknown"), [
    ({"moving_msk": "mask"}, {}, "'moving_msk'"),  # a misspelled mask: once registered without it, silently
    ({}, {"frame": "0"}, "'frame'"),  # the 4-D fields are moving_frame / fixed_frame
    ({}, {"refine": "10", "modle": "x"}, "'modle', 'refine'"),
], ids=["misspelled_mask", "bare_frame", "two_unknown"])
def test_unknown_form_fields_are_refused_naming_them_and_the_accepted_ones(server, uploads, files, form, unknown):
    before = state(server)
    chosen = {"fixed": "fixed", "moving": "moving"} | files
    response = server.client.post("/v1/registrations", data=form,
                                  files={role: (f"{role}.nii.gz", uploads[key]) for role, key in chosen.items()})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "unknown_form_field" and unknown in body["detail"], body["detail"]
    for accepted in ("fixed", "moving", "moving_mask", "fixed_mask", "moving_frame", "refine_steps"):
        assert accepted in body["detail"].split("this route takes: ")[1].split(", ")
    assert state(server) == before


def test_a_4d_image_without_its_frame_names_the_real_field(server, uploads, tmp_path):
    """The hint names ``moving_frame`` (the form field), not a ``frame`` parameter that does not exist."""
    slice_2d = sitk.ReadImage(str(write_bytes(tmp_path / "m.nii.gz", uploads["moving"])))
    volume = sitk.JoinSeries([slice_2d] * 4)
    for name, image in (("volume", volume), ("cine", sitk.JoinSeries([volume] * 3))):
        sitk.WriteImage(image, str(tmp_path / f"{name}.nii.gz"))
    files = {"fixed": ("volume.nii.gz", (tmp_path / "volume.nii.gz").read_bytes()),
             "moving": ("cine.nii.gz", (tmp_path / "cine.nii.gz").read_bytes())}
    before = state(server)
    response = server.client.post("/v1/registrations", files=files)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "frame_required" and "moving_frame (0 to 2)" in body["detail"], body["detail"]
    out_of_range = server.client.post("/v1/registrations", data={"moving_frame": "5"}, files=files)
    assert out_of_range.status_code == 422 and "moving_frame=5 is out of range" in out_of_range.json()["detail"]
    assert state(server) == before


def write_bytes(path, data):
    path.write_bytes(data)
    return path
