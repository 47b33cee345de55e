"""The ``archive`` command line tool."""
