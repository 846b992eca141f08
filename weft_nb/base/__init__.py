"""weft_nb.base: internal; the public names are re-exported by ``weft_nb``."""
