"""Small shared services with no knowledge of graphs or models: atomic file writes, peak memory,
logging setup. Everything in the package may import these; they import nothing from it but
:mod:`dgl_rbgt.errors`."""
