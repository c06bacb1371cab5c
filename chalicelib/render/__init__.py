"""Engine: output formats (VOTable, CSV, TSV, FITS, Parquet) and their encoders."""
