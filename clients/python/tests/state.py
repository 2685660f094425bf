"""What tests.run started, for the tests to use."""

config = None
cluster = None
origin = None
binary = None
workdir = None
