"""Reproduce the bundled starter model: VoxelMorph trained with AdaCS on the ACDC train split.

    python -m service.starter.train_starter_model --acdc ../shared/data/acdc --work runs/starter

Trains (resumably, in ``--work``) on the SS-Net train patients' 2D ED -> ES slice pairs, validates on
the val patients, then writes the artifact to ``service/starter/acdc-voxelmorph-adacs/`` with a card
that states the data, its terms and the research-use limit. No ACDC image is written there: only the
estimator's weights, its config and the card.

The HDF5 copy of ACDC stores no voxel spacing. Its images are on the scanners' native grids, whose
in-plane spacing is 1.37-1.68 mm (ACDC paper), so the artifact declares the nominal ``--spacing-mm``
(1.5 mm): at inference, a user's image is then resampled to the scale the network learned, whatever
its own resolution. Deleting that line would make the model read windows of the same *voxel* count.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent / "acdc-voxelmorph-adacs"

ACDC_CITATION = ("O. Bernard, A. Lalande, C. Zotti, F. Cervenansky et al., 'Deep Learning Techniques for "
                 "Automatic MRI Cardiac Multi-structures Segmentation and Diagnosis: Is the Problem Solved?', "
                 "IEEE TMI 37(11):2514-2525, 2018. https://www.creatis.insa-lyon.fr/Challenge/acdc/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acdc", required=True, help="folder of the ACDC HDF5 copy (holds data/, train.list)")
    parser.add_argument("--work", default="runs/starter", help="training folder (checkpoints; resumable)")
    parser.add_argument("--out", default=str(BUNDLE), help="where the artifact is written")
    parser.add_argument("--warmup-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--spacing-mm", type=float, default=1.5, help="nominal in-plane spacing of the data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    from models.artifact import load_artifact, save_artifact
    from models.data.spec import describe_spec, load_pairs
    from models.trainer import TrainConfig, train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_spec, val_spec = f"acdc-h5:{args.acdc}:train", f"acdc-h5:{args.acdc}:val"
    train_pairs, val_pairs = load_pairs(train_spec), load_pairs(val_spec)
    cfg = TrainConfig(method="adacs", warmup_epochs=args.warmup_epochs, epochs=args.epochs,
                      steps_per_epoch=args.steps_per_epoch, seed=args.seed, val_max_pairs=101)
    data = {"train": describe_spec(train_spec), "val": describe_spec(val_spec)}
    with tqdm(desc="starter model", unit="update") as bar:
        def progress(event) -> None:
            bar.total = event.total_steps
            bar.n = event.global_step
            if event.kind == "epoch":
                bar.set_postfix(phase=event.phase, m_t=f"{event.m_t:.3f}", **{
                    k: f"{v:.1f}" for k, v in event.val.items() if k == "val_dice"})
            bar.refresh()

        train(cfg, train_pairs, args.work, val_pairs=val_pairs, callback=progress, data_description=data)

    trained = load_artifact(Path(args.work) / "model")
    card = dict(trained.card)
    card.update({
        "name": "acdc-voxelmorph-adacs",
        "summary": "Starter model: 2D VoxelMorph trained with AdaCS on cine-MRI ED -> ES slice pairs of the "
                   "ACDC challenge (70 training patients); registers short-axis cardiac MRI slice by slice.",
        "data": {**card.get("data", {}), "dataset": "ACDC (Automated Cardiac Diagnosis Challenge), training "
                 "set, SSL4MIS/SS-Net HDF5 preprocessing; train split = 70 patients, val split = 10 patients",
                 "citation": ACDC_CITATION,
                 "terms": "ACDC images are free for research and education after registration, citation "
                          "required; treated as non-commercial research use only. These weights carry the "
                          "same research-use-only restriction, apart from the code's licence.",
                 "nominal_spacing_mm": args.spacing_mm},
        "intended_use": "Research use only. Not a medical device; not for clinical decisions. Trained on "
                        "short-axis cine-MRI; other modalities or views are out of its training distribution.",
        "reproduce": "python -m service.starter.train_starter_model --acdc ../shared/data/acdc",
    })
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    spacing = tuple(args.spacing_mm for _ in range(trained.ndim))
    save_artifact(out, trained.estimator, trained.config, trained.intensity, card,
                  train_shape=trained.train_shape, train_spacing_mm=spacing)
    print(f"wrote {out} (validation {card.get('validation')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
