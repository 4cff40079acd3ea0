"""The smoke test's client: runs inside the API container, talks to the API over HTTP as a user would.

docker/smoke-test.sh feeds this file to the container's Python (``docker compose exec -T api python
- COMMAND ...  < docker/smoke_client.py``), so the operator's machine needs Docker and nothing else.
Each command prints its result on stdout (ids, one per line, or ``key=value``) and exits 1 with the
reason on stderr when a check fails. The API key comes from ``SMOKE_KEY`` in the environment.

  data                      write a phantom pair and a small manifest dataset (zip) under /tmp/smoke
  register [MODEL]          register the pair (starter, or MODEL), wait, check every output file
  cine                      track a 6-frame phantom cine with the starter model; check the 4-D outputs and EF
  queue N                   send N registrations of the pair without waiting; print their ids
  wait ID...                wait until each registration succeeded; print their ids
  train EPOCHS STEPS        upload the dataset and queue a tiny vanilla training; print its id
  wait-epoch ID N           wait until training ID runs its epoch N (a checkpoint exists before it)
  wait-train ID EPOCHS      wait until training ID succeeded; check it resumed and ran every epoch
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx

API = "http://127.0.0.1:8000"
DATA = Path("/tmp/smoke")
ROLES = ("fixed", "moving", "fixed_mask", "moving_mask")
TIMEOUT_S = 300.0


def fail(message: str) -> None:
    print(f"smoke_client: {message}", file=sys.stderr)
    sys.exit(1)


def client() -> httpx.Client:
    return httpx.Client(base_url=API, headers={"X-API-Key": os.environ["SMOKE_KEY"]}, timeout=120)


def _write_pair(folder: Path, size: int, index: int, seed: int) -> dict[str, str]:
    """One phantom pair as 2D NIfTI files with a 1.5 mm spacing; their names by role."""
    import SimpleITK as sitk

    from models.data.synthetic import PhantomConfig, make_phantom_pair

    pair = make_phantom_pair(PhantomConfig(size=size, seed=seed), index)
    names = {}
    for role in ROLES:
        image = sitk.GetImageFromArray(getattr(pair, role))
        image.SetSpacing((1.5, 1.5))
        names[role] = f"pair{index:02d}_{role}.nii.gz"
        sitk.WriteImage(image, str(folder / names[role]))
    return names


def data() -> None:
    """The registration pair (96 px) and a dataset of 8 pairs of 32 px, two per subject, as a zip."""
    from models.io.archive import write_zip

    (DATA / "pair").mkdir(parents=True, exist_ok=True)
    _write_pair(DATA / "pair", 96, 0, seed=3)
    study = DATA / "study" / "images"
    study.mkdir(parents=True, exist_ok=True)
    rows = ["fixed,moving,fixed_mask,moving_mask,id,subject"]
    for index in range(8):
        names = _write_pair(study, 32, index, seed=5)
        rows.append(",".join(f"images/{names[role]}" for role in ROLES) + f",pair{index:02d},subject{index // 2:02d}")
    (DATA / "study" / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    write_zip(DATA / "study.zip", DATA / "study", prefix="study/")
    print(DATA)


def _send_pair(http: httpx.Client, model: str | None = None, wait_s: int = 0) -> dict:
    files = {role: (f"{role}.nii.gz", (DATA / "pair" / f"pair00_{role}.nii.gz").read_bytes(), "application/gzip")
             for role in ROLES}
    response = http.post("/v1/registrations", files=files, data={"model": model} if model else {},
                         params={"wait": wait_s} if wait_s else {})
    if response.status_code not in (200, 201, 202):
        fail(f"POST /v1/registrations answered {response.status_code}: {response.text[:500]}")
    return response.json()


def _finished(http: httpx.Client, path: str, timeout_s: float = TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = http.get(path).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            fail(f"{path} still {job['status']} after {timeout_s:.0f} s: {json.dumps(job.get('progress'))[:300]}")
        time.sleep(1)


def register(model: str | None = None) -> None:
    """Register the pair and check what a user downloads: the field on the fixed grid, the outputs."""
    import SimpleITK as sitk

    with client() as http:
        job = _finished(http, f"/v1/registrations/{_send_pair(http, model, wait_s=60)['id']}")
        if job["status"] != "succeeded":
            fail(f"registration {job['id']} {job['status']}: {job.get('error')}")
        # preview.png is drawn by a worker when first downloaded: the API waits for it.
        response = http.get(f"/v1/registrations/{job['id']}/preview.png")
        if response.status_code != 200 or not response.content.startswith(b"\x89PNG"):
            fail(f"downloading preview.png answered {response.status_code}")
        job = http.get(f"/v1/registrations/{job['id']}").json()
        out = DATA / "out" / job["id"]
        out.mkdir(parents=True, exist_ok=True)
        for role in ("displacement", "warped", "warped_mask", "report", "preview"):
            if role not in job["outputs"]:
                fail(f"registration {job['id']} has no {role} output ({sorted(job['outputs'])})")
            response = http.get(job["outputs"][role]["url"])
            if response.status_code != 200 or not response.content:
                fail(f"downloading {role} answered {response.status_code}")
            (out / job["outputs"][role]["file"]).write_bytes(response.content)
    fixed = sitk.ReadImage(str(DATA / "pair" / "pair00_fixed.nii.gz"))
    field = sitk.ReadImage(str(out / "displacement.nii.gz"))
    if field.GetSize() != fixed.GetSize() or field.GetNumberOfComponentsPerPixel() != fixed.GetDimension():
        fail(f"displacement is {field.GetSize()} x {field.GetNumberOfComponentsPerPixel()}, fixed is {fixed.GetSize()}")
    labels = set(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped_mask.nii.gz"))).ravel().tolist())
    if not labels <= {0, 1, 2} or 2 not in labels:
        fail(f"warped mask labels {sorted(labels)}: expected the myocardium (2) among 0, 1, 2")
    dice = (json.loads((out / "report.json").read_text()).get("dice") or {}).get("2")
    print(f"{job['model_version']}, myocardium Dice {dice:.1f} %" if dice is not None else job["model_version"])


def cine() -> None:
    """A phantom cine (6 frames, 2 slices) from its ED mask: the 4-D masks and the EF near the truth."""
    import gzip

    import nibabel as nib
    import numpy as np

    from models.data.phantom_cine import make_phantom_cine

    phantom = make_phantom_cine(frames=6, slices=2, size=96, seed=1, noise=0.02)
    (DATA / "cine").mkdir(parents=True, exist_ok=True)
    affine = np.diag([-1.5, -1.5, phantom.spacing_mm[0], 1.0])
    nib.save(nib.Nifti1Image(np.transpose(phantom.images, (3, 2, 1, 0)), affine), str(DATA / "cine" / "cine.nii.gz"))
    nib.save(nib.Nifti1Image(np.transpose(phantom.masks[0], (2, 1, 0)), affine), str(DATA / "cine" / "ed.nii.gz"))
    files = {"cine": ("cine.nii.gz", (DATA / "cine" / "cine.nii.gz").read_bytes()),
             "reference_mask": ("ed.nii.gz", (DATA / "cine" / "ed.nii.gz").read_bytes())}
    with client() as http:
        response = http.post("/v1/cine-registrations", files=files, data={
            "labels": '{"1": "LV", "2": "myocardium"}', "refine_steps": "100", "refine_similarity": "ncc"})
        if response.status_code != 202:
            fail(f"POST /v1/cine-registrations answered {response.status_code}: {response.text[:500]}")
        job = _finished(http, f"/v1/cine-registrations/{response.json()['id']}")
        if job["status"] != "succeeded":
            fail(f"cine registration {job['id']} {job['status']}: {job.get('error')}")
        masks = http.get(job["outputs"]["warped_masks"]["url"])
    shape = nib.Nifti1Image.from_bytes(gzip.decompress(masks.content)).shape
    if shape != (96, 96, 2, 6):
        fail(f"warped_masks.nii.gz is {shape}, expected (96, 96, 2, 6)")
    ef, truth = job["report"]["lv"]["ef_pct"], phantom.ejection_fraction()
    if abs(ef - truth) > 2:
        fail(f"cine EF {ef:.1f} % is more than 2 points from the phantom's {truth:.1f} %")
    print(f"EF {ef:.1f} % (truth {truth:.1f} %), ES frame {job['report']['lv']['es_frame']}")


def queue(count: str) -> None:
    with client() as http:
        for _ in range(int(count)):
            print(_send_pair(http)["id"])


def wait(*ids: str) -> None:
    """Each registration succeeded (a failed or cancelled one fails the check)."""
    with client() as http:
        for job_id in ids:
            job = _finished(http, f"/v1/registrations/{job_id}")
            if job["status"] != "succeeded":
                fail(f"registration {job_id} {job['status']}: {job.get('error')}")
            print(job_id)


def train(epochs: str, steps: str) -> None:
    """A tiny vanilla training (32 px, batch 2, no crop): seconds of CPU per epoch."""
    with client() as http:
        response = http.post("/v1/datasets", files={"file": ("study.zip", (DATA / "study.zip").read_bytes(),
                                                             "application/zip")}, data={"name": "smoke"})
        if response.status_code != 201:
            fail(f"POST /v1/datasets answered {response.status_code}: {response.text[:500]}")
        hyperparameters = {"warmup_epochs": 0, "epochs": int(epochs), "steps_per_epoch": int(steps), "batch_size": 2,
                           "crop": None, "seed": 0}
        response = http.post("/v1/training-jobs", json={"dataset_id": response.json()["id"], "model_name": "smoke",
                                                        "method": "none", "hyperparameters": hyperparameters,
                                                        "val_fraction": 0.25})
        if response.status_code != 202:
            fail(f"POST /v1/training-jobs answered {response.status_code}: {response.text[:500]}")
        print(response.json()["id"])


def wait_epoch(job_id: str, epoch: str) -> None:
    with client() as http:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            job = http.get(f"/v1/training-jobs/{job_id}").json()
            if job["status"] == "running" and job["progress"].get("epoch", 0) >= int(epoch):
                print(f"epoch={job['progress']['epoch']} attempts={job['attempts']}")
                return
            if job["status"] not in ("queued", "running"):
                fail(f"training {job_id} {job['status']} before its epoch {epoch}: make it longer ({job.get('error')})")
            if time.monotonic() > deadline:
                fail(f"training {job_id} did not reach epoch {epoch} in {TIMEOUT_S:.0f} s: {job['progress']}")
            time.sleep(0.3)


def wait_train(job_id: str, epochs: str) -> None:
    """Succeeded after a resume: two attempts or more, resumed from a checkpoint, every epoch in its history."""
    with client() as http:
        job = _finished(http, f"/v1/training-jobs/{job_id}")
    result = job.get("result") or {}
    if job["status"] != "succeeded":
        fail(f"training {job_id} {job['status']}: {job.get('error')}")
    if job["attempts"] < 2 or not result.get("resumed_from_epoch"):
        fail(f"training {job_id} was not resumed (attempts {job['attempts']}, result {json.dumps(result)[:300]})")
    if result.get("epochs_run") != int(epochs):
        fail(f"training {job_id} ran {result.get('epochs_run')} epochs, not {epochs}: its history lost some")
    print(f"model={job['model_version']} attempts={job['attempts']} resumed_from_epoch={result['resumed_from_epoch']} "
          f"epochs={result['epochs_run']}")


COMMANDS = {"data": data, "register": register, "cine": cine, "queue": queue, "wait": wait, "train": train,
            "wait-epoch": wait_epoch, "wait-train": wait_train}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        fail(f"usage: COMMAND [ARG...], COMMAND one of {', '.join(COMMANDS)}")
    COMMANDS[sys.argv[1]](*sys.argv[2:])
