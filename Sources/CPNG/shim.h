#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* In-memory PNG encode and decode for MumuSampler's output layer (Sources/MumuSampler/Output/PNG.swift).
   libpng reports errors by longjmp, which Swift cannot catch, so the setjmp lives here, in C: each function
   installs an error callback that copies libpng's message into `err` and longjmps back, frees what it
   allocated and returns non-zero. Memory handed to the caller comes from malloc; release it with free() or
   mumu_png_pixels_free(). */

typedef struct {
    char *msg;
    size_t cap;
} mumu_png_errctx;

static inline void mumu_png_set_error(char *err, size_t errlen, const char *msg) {
    if (err != NULL && errlen > 0) snprintf(err, errlen, "%s", msg);
}

static inline void mumu_png_error_cb(png_structp png, png_const_charp msg) {
    mumu_png_errctx *e = (mumu_png_errctx *)png_get_error_ptr(png);
    if (e != NULL) mumu_png_set_error(e->msg, e->cap, msg != NULL ? msg : "libpng error");
    png_longjmp(png, 1);
}

/* Warnings (e.g. a known-incorrect sRGB profile in a file being read) are not failures: dropped. */
static inline void mumu_png_warning_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} mumu_png_outbuf;

static inline void mumu_png_write_cb(png_structp png, png_bytep bytes, png_size_t n) {
    mumu_png_outbuf *b = (mumu_png_outbuf *)png_get_io_ptr(png);
    if (n > SIZE_MAX - b->len) png_error(png, "PNG output too large");
    if (b->len + n > b->cap) {
        size_t cap = b->cap < 65536 ? 65536 : b->cap;
        while (cap < b->len + n) cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
        unsigned char *grown = (unsigned char *)realloc(b->data, cap);
        if (grown == NULL) png_error(png, "out of memory");
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
}

static inline void mumu_png_flush_cb(png_structp png) { (void)png; }

/* Encodes w x h 8-bit RGB pixels (row-major, 3 bytes a pixel) as a non-interlaced PNG. Text chunk i has
   keyword keys[i] (Latin-1) and text values[i]: written as tEXt (values[i] already Latin-1 bytes) when
   is_itxt[i] is 0, else as uncompressed iTXt (values[i] UTF-8). Text chunks come before the image data.
   On success returns 0 and sets *out (malloc'd; the caller frees it) and *outlen. */
static inline int mumu_png_encode(const unsigned char *rgb, int w, int h, int ntext, const char *const *keys,
                                  const char *const *values, const int *is_itxt, unsigned char **out,
                                  size_t *outlen, char *err, size_t errlen) {
    *out = NULL;
    *outlen = 0;
    if (w <= 0 || h <= 0 || ntext < 0) {
        mumu_png_set_error(err, errlen, "invalid image size or text count");
        return 1;
    }
    mumu_png_errctx ectx = {err, errlen};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ectx, mumu_png_error_cb, mumu_png_warning_cb);
    if (png == NULL) {
        mumu_png_set_error(err, errlen, "cannot create a libpng write structure");
        return 1;
    }
    png_infop info = png_create_info_struct(png);
    /* The output buffer is on the heap: the write callback grows it between setjmp and a possible longjmp,
       and only non-automatic (or volatile) objects are sure to keep such changes. */
    mumu_png_outbuf *buf = (mumu_png_outbuf *)calloc(1, sizeof(mumu_png_outbuf));
    png_bytep *rows = (png_bytep *)malloc(sizeof(png_bytep) * (size_t)h);
    png_textp text = (png_textp)calloc(ntext > 0 ? (size_t)ntext : 1, sizeof(png_text));
    if (info == NULL || buf == NULL || rows == NULL || text == NULL) {
        mumu_png_set_error(err, errlen, "out of memory");
        free(buf);
        free(rows);
        free(text);
        png_destroy_write_struct(&png, info != NULL ? &info : NULL);
        return 1;
    }
    /* The locals themselves are not assigned after setjmp, so they keep their values after a longjmp. */
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        free(text);
        free(buf->data);
        free(buf);
        png_destroy_write_struct(&png, &info);
        return 1;
    }
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)(rgb + (size_t)y * (size_t)w * 3);
    for (int i = 0; i < ntext; i++) {
        text[i].key = (png_charp)keys[i];
        text[i].text = (png_charp)values[i];
        if (is_itxt[i]) {
            text[i].compression = PNG_ITXT_COMPRESSION_NONE;
            text[i].itxt_length = strlen(values[i]);
            text[i].lang = NULL;
            text[i].lang_key = NULL;
        } else {
            text[i].compression = PNG_TEXT_COMPRESSION_NONE;
            text[i].text_length = strlen(values[i]);
        }
    }
    png_set_write_fn(png, buf, mumu_png_write_cb, mumu_png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (ntext > 0) png_set_text(png, info, text, ntext);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    free(text);
    *out = buf->data;
    *outlen = buf->len;
    free(buf);
    return 0;
}

typedef struct {
    const unsigned char *data;
    size_t len;
    size_t pos;
} mumu_png_inbuf;

static inline void mumu_png_read_cb(png_structp png, png_bytep bytes, png_size_t n) {
    mumu_png_inbuf *b = (mumu_png_inbuf *)png_get_io_ptr(png);
    if (n > b->len - b->pos) png_error(png, "file ends in the middle of the PNG data (truncated?)");
    memcpy(bytes, b->data + b->pos, n);
    b->pos += n;
}

/* ---- Decoding: the one PNG reader, for MumuEncoder's image loader (Image/ImageLoader.swift) and for reading
   outputs back with their text (MumuSampler's Output/PNG.swift) ---- */

/* Pixels as the file holds them, reduced to 8 bits a channel the way PIL opens PNGs, and the text chunks. */
typedef struct {
    unsigned char *pixels; /* width * height * channels bytes, malloc'd */
    int width;
    int height;
    int channels;          /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA (palette and tRNS expanded) */
    int has_alpha;         /* an alpha channel or a tRNS chunk was present */
    unsigned char *exif;   /* the eXIf chunk's payload (malloc'd), or NULL */
    size_t exif_len;
    int ntext;             /* text chunks (tEXt, zTXt, iTXt) in file order, before and after the image data */
    char **keys;           /* NUL-terminated Latin-1 keywords */
    char **values;         /* text bytes: Latin-1 for tEXt/zTXt, UTF-8 for iTXt */
    size_t *value_lengths;
    int *is_utf8;          /* 1 for iTXt */
} mumu_png_pixels;

static inline void mumu_png_pixels_free(mumu_png_pixels *img) {
    if (img == NULL) return;
    if (img->keys != NULL)
        for (int i = 0; i < img->ntext; i++) free(img->keys[i]);
    if (img->values != NULL)
        for (int i = 0; i < img->ntext; i++) free(img->values[i]);
    free(img->keys);
    free(img->values);
    free(img->value_lengths);
    free(img->is_utf8);
    free(img->pixels);
    free(img->exif);
    memset(img, 0, sizeof *img);
}

static inline char *mumu_png_dup(const char *s, size_t n) {
    char *d = (char *)malloc(n + 1);
    if (d != NULL) {
        if (n > 0) memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* Decodes a PNG held in memory, keeping its channels: palette and low bit depths expanded, tRNS turned into
   an alpha channel, 16-bit channels reduced to their high byte (PIL's "RGB;16B", "RGBA;16B", "LA;16B"
   raw modes), except 16-bit gray without tRNS, which PIL opens as mode "I;16" and converts to RGB by
   clipping at 255 (I16_RGB in Convert.c): done here the same way. Returns 0 on success (release *out
   with mumu_png_pixels_free), 2 when the data is not a PNG, 3 when the header's size exceeds max_side on
   a side or max_pixels in all (width/height set, nothing decoded), 1 on any other error (message in err). */
static inline int mumu_png_decode_pixels(const unsigned char *data, size_t len, long max_side, long long max_pixels,
                                         mumu_png_pixels *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (len < 8 || png_sig_cmp((png_const_bytep)data, 0, 8) != 0) {
        mumu_png_set_error(err, errlen, "not a PNG file (no PNG signature)");
        return 2;
    }
    /* Every chunk's length must fit in what is left of the file. libpng allocates a chunk's claimed length
       before reading it (Debian's 1.6.39 does so for eXIf whatever png_set_chunk_malloc_max says): a 60-byte
       file whose eXIf chunk claimed 2 GB made it allocate 2 GB (found by fuzz/ImageFuzz.swift). Walking the
       chunk headers first is linear in the file size (each step moves at least 12 bytes) and stops at IEND. */
    {
        size_t pos = 8;
        while (pos + 8 <= len) {
            uint32_t n = ((uint32_t)data[pos] << 24) | ((uint32_t)data[pos + 1] << 16) | ((uint32_t)data[pos + 2] << 8) | data[pos + 3];
            if (n > 0x7fffffffu || (size_t)n + 12 > len - pos) {
                char type[5] = {0};
                for (int k = 0; k < 4; k++) {
                    unsigned char c = data[pos + 4 + k];
                    type[k] = (c >= 32 && c < 127) ? (char)c : '?';
                }
                if (err != NULL && errlen > 0)
                    snprintf(err, errlen, "chunk %s at byte %zu claims %u bytes, past the end of the file (truncated?)", type, pos, n);
                return 1;
            }
            if (memcmp(data + pos + 4, "IEND", 4) == 0) break;
            pos += (size_t)n + 12;
        }
    }
    mumu_png_errctx ectx = {err, errlen};
    mumu_png_inbuf in = {data, len, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ectx, mumu_png_error_cb, mumu_png_warning_cb);
    if (png == NULL) {
        mumu_png_set_error(err, errlen, "cannot create a libpng read structure");
        return 1;
    }
    png_infop info = png_create_info_struct(png);
    if (info == NULL) {
        mumu_png_set_error(err, errlen, "out of memory");
        png_destroy_read_struct(&png, NULL, NULL);
        return 1;
    }
    /* Assigned after setjmp, so volatile: their values must survive a longjmp. */
    png_bytep *volatile rows = NULL;
    unsigned char *volatile raw = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free((void *)rows);
        free((void *)raw);
        mumu_png_pixels_free(out);
        png_destroy_read_struct(&png, &info, NULL);
        return 1;
    }
    png_set_read_fn(png, &in, mumu_png_read_cb);
    /* The size limit below applies; libpng's own default (1,000,000 a side) is raised to match ours.
       Ancillary chunks: at most 8 MiB allocated for one, at most 1000 kept. */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)8 << 20);
    png_set_chunk_cache_max(png, 1000);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info);
    png_uint_32 h = png_get_image_height(png, info);
    if ((long long)w > max_side || (long long)h > max_side || (long long)w * (long long)h > max_pixels) {
        out->width = (int)(w > 0x7fffffff ? 0x7fffffff : w);
        out->height = (int)(h > 0x7fffffff ? 0x7fffffff : h);
        png_destroy_read_struct(&png, &info, NULL);
        return 3;
    }
    int color = png_get_color_type(png, info);
    int depth = png_get_bit_depth(png, info);
    int trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    int gray16 = depth == 16 && color == PNG_COLOR_TYPE_GRAY && !trns;
    if (!gray16) {
        png_set_expand(png);
        png_set_strip_16(png);
    }
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t channels = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (gray16 ? rowbytes != (size_t)w * 2 : rowbytes != (size_t)w * channels)
        png_error(png, "unexpected row size after conversion");
    raw = (unsigned char *)malloc(rowbytes * (size_t)h > 0 ? rowbytes * (size_t)h : 1);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * (size_t)(h > 0 ? h : 1));
    if (raw == NULL || rows == NULL) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = raw + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, info);
    free((void *)rows);
    rows = NULL;
    if (gray16) {
        /* In place: pixel i's two bytes (big-endian) become one byte, clipped at 255. */
        size_t n = (size_t)w * (size_t)h;
        for (size_t i = 0; i < n; i++) raw[i] = raw[2 * i] == 0 ? raw[2 * i + 1] : 255;
        channels = 1;
    }
    {
        png_textp text = NULL;
        int ntext = 0;
        png_get_text(png, info, &text, &ntext);
        if (ntext > 0) {
            out->keys = (char **)calloc((size_t)ntext, sizeof(char *));
            out->values = (char **)calloc((size_t)ntext, sizeof(char *));
            out->value_lengths = (size_t *)calloc((size_t)ntext, sizeof(size_t));
            out->is_utf8 = (int *)calloc((size_t)ntext, sizeof(int));
            if (out->keys == NULL || out->values == NULL || out->value_lengths == NULL || out->is_utf8 == NULL)
                png_error(png, "out of memory");
            out->ntext = ntext;
            for (int i = 0; i < ntext; i++) {
                int itxt = text[i].compression == PNG_ITXT_COMPRESSION_NONE || text[i].compression == PNG_ITXT_COMPRESSION_zTXt;
                size_t n = text[i].text == NULL ? 0 : (itxt ? text[i].itxt_length : text[i].text_length);
                out->keys[i] = mumu_png_dup(text[i].key, strlen(text[i].key));
                out->values[i] = mumu_png_dup(text[i].text != NULL ? text[i].text : "", n);
                out->value_lengths[i] = n;
                out->is_utf8[i] = itxt;
                if (out->keys[i] == NULL || out->values[i] == NULL) png_error(png, "out of memory");
            }
        }
    }
#ifdef PNG_eXIf_SUPPORTED
    {
        png_uint_32 nexif = 0;
        png_bytep exif = NULL;
        if (png_get_eXIf_1(png, info, &nexif, &exif) != 0 && exif != NULL && nexif > 0) {
            out->exif = (unsigned char *)malloc(nexif);
            if (out->exif == NULL) png_error(png, "out of memory");
            memcpy(out->exif, exif, nexif);
            out->exif_len = nexif;
        }
    }
#endif
    out->pixels = (unsigned char *)raw;
    raw = NULL;
    out->width = (int)w;
    out->height = (int)h;
    out->channels = (int)channels;
    out->has_alpha = (channels == 2 || channels == 4) ? 1 : 0;
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}
