# Reports: one self-contained HTML page a competitor opens after a run.
