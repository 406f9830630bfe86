"""NSM model side: configuration, training, quantization and the bit-exact golden model."""
