"""Other libraries' attributors wrapped in our interface, run as peers in `python -m eval.run`."""
