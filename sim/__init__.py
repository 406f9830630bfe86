"""cocotb testbenches and the Verilator harness."""
