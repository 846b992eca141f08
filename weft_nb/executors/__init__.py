"""weft_nb.executors: internal; the public names are re-exported by ``weft_nb``."""
