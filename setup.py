"""The build of featcache's one compiled helper (see featcache/extraction/_fsscan.c); the rest is in setup.cfg.

It is optional: where it cannot be built, featcache lists and stats files in plain Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("featcache.extraction._fsscan", ["featcache/extraction/_fsscan.c"], optional=True)])
