#ifndef MUMU_AMX_TILES_H
#define MUMU_AMX_TILES_H
/* The AMX tile configuration both AMX kernels use (gemm_bf16.c, attention.c): palette 1, eight tiles of 16 rows
 * x 64 bytes. Private to CMumuKernels; callers have asked the kernel for AMX permission first. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

__attribute__((target("amx-tile"))) static inline void amx_config(void) {
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    _tile_loadconfig(&cfg);
}

#endif
