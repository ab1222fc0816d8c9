"""medpipe.inference"""
