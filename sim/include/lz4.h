/* The two functions of the LZ4 block API that Verilator's FST writer calls.
 *
 * Used only when the system has the LZ4 runtime (liblz4.so.1) but not its development header;
 * sim/verilator.py then links that runtime directly. The declarations follow the stable public
 * LZ4 API (lz4.h, since r129). */
#ifndef NSM_SIM_LZ4_MINIMAL_H
#define NSM_SIM_LZ4_MINIMAL_H
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
#endif
