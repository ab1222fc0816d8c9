"""medpipe: DICOM folders to a validated SIIM-ACR submission."""

__version__ = "0.1.0"
