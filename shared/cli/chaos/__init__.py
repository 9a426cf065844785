"""The fault matrix of `driftloop bench chaos`: a stack to break, the faults, the client that
keeps the books.
"""
