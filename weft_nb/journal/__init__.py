"""weft_nb.journal: internal; the public names are re-exported by ``weft_nb``."""
