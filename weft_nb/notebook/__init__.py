"""weft_nb.notebook: internal; the public names are re-exported by ``weft_nb``."""
