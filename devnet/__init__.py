"""Local VeriFrame backend and IPFS node for tests and the demo; not shipped in the extension zip."""
