"""Verifiable frames: the receipt a worker signs into each result PNG, and the checks anyone can run on one.

``png_chunks`` reads and writes a PNG's chunks (the image data's hash, the ``iTXt`` text chunk);
``receipt`` builds the receipt, turns it into the felt the worker's Stark key signs, and checks a
signature. Imports ``errors`` only (and starknet-py for the curve), so the worker's upload stage and the
``verify`` command share one definition of what a receipt is.
"""
