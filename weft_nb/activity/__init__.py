"""weft_nb.activity: internal; the public names are re-exported by ``weft_nb``."""
