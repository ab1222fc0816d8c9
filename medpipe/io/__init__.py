"""Readers and writers for the formats the pipeline meets: DICOM, SIIM RLE, label CSVs, NIfTI."""
