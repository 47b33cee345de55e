"""The sharing service: revocable public links to collections."""
