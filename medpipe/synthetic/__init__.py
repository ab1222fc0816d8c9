"""The embedded demo data of every family, apart from the code that reads real data."""
