"""Registration data: the pair type, the synthetic phantom, ACDC readers and the ``--data`` SPEC."""
