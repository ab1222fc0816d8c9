"""medpipe.fusion"""
