"""The embedded demo data of every task, apart from the code that reads real data."""
