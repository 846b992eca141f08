"""weft_nb.endpoint: internal; the public names are re-exported by ``weft_nb``."""
