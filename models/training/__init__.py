"""The parts of the trainer (:mod:`models.trainer`), one concept a module.

- :mod:`~models.training.config`: :class:`~models.training.config.TrainConfig` and which settings a
  checkpoint may resume under;
- :mod:`~models.training.schedule`: phases and the learning rate, pure functions of the position;
- :mod:`~models.training.data`: the training set in memory and the seeded draw of micro-batches;
- :mod:`~models.training.steps`: the two optimiser updates of Algorithm 1;
- :mod:`~models.training.validation`: validation Dice, the identity's floor, the warm-up's warning;
- :mod:`~models.training.card`: the model card a finished run writes;
- :mod:`~models.training.distributed`: one run across processes (DDP, torchrun's convention).
"""
