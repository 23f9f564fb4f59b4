"""Data sources (packaged corpora, local files, generators), vocabularies and Lightning data modules."""
