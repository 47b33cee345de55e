"""The catalog service: organizations, members, drives, files and scans."""
