"""NSM accelerator gateware (Amaranth)."""
