"""The collections service: curated, ordered sets of catalog files."""
