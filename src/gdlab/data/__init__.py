"""Loading, checking and scaling data; the built-in data sets."""
