"""weft_nb.engine: internal; the public names are re-exported by ``weft_nb``."""
