"""Image reading and writing (SimpleITK, no torch): the API process validates uploads with it."""
