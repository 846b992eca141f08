"""weft_nb.cli: internal; the public names are re-exported by ``weft_nb``."""
