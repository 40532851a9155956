"""The feature cache on disk: the only package that knows HDF5."""
